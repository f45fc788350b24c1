"""Masked and weighted classification losses built from the reducers."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sodeep.checks import require
from sodeep.losses.precision import float32_under_autocast
from sodeep.losses.validation import check_same_shape, check_tensor
from sodeep.reducers import Reducer, get_reducer


@float32_under_autocast
def sigmoid_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str | Reducer = "nonzero_weighted_mean",
) -> torch.Tensor:
    """Sigmoid cross-entropy with logits, weighted and reduced.

    Defaults reproduce ``tf.compat.v1.losses.sigmoid_cross_entropy(labels, logits, weights=weight)``
    (reduction ``SUM_BY_NONZERO_WEIGHTS``): ``sum(w * l) / count(w != 0)`` with ``w`` broadcast to
    the loss; with a 0/1 mask as ``weight``, only known labels contribute.  All-zero weights give
    0, still connected to the graph.

    Args:
        logits: any shape.
        labels: same shape; floats in [0, 1] (soft labels allowed).
        weight: broadcastable to ``logits``.
        reduction: see :mod:`sodeep.reducers`.

    Example:
        >>> logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
        >>> labels = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
        >>> sigmoid_cross_entropy(logits, labels, weight=torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        tensor(1.0032)
    """
    check_tensor(logits, "logits")
    check_tensor(labels, "labels", floating=False)
    check_same_shape(logits, labels, "logits and labels")
    require(
        (labels >= 0) & (labels <= 1),
        "labels must lie in [0, 1], masked positions included (fill unknown labels with 0 and give them weight 0)",
    )
    per_element = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return get_reducer(reduction)(per_element, weight)
