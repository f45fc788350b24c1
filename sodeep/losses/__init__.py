"""Losses: rank-based (SoDeep), age difference (Cheng et al. 2021), margin ranking and masked
classification.  Each is an ``nn.Module`` over a pure function of the same name in lower case,
but :func:`sigmoid_cross_entropy`, a function only (its module would be
``torch.nn.BCEWithLogitsLoss`` with a weight).  Each returns the scores' dtype, and float32 under
``torch.autocast``, where it runs in float32 as torch's own losses do there.

Built-ins that already do the job are not re-wrapped: ``torch.nn.TripletMarginLoss`` for
(anchor, positive, negative) embeddings, ``torch.nn.MarginRankingLoss`` for paired score vectors,
``torch.nn.MultiLabelMarginLoss`` for index-format multi-label targets without masks.
"""

from sodeep.losses.age_difference import AgeDifferenceLoss, age_difference_loss
from sodeep.losses.classification import sigmoid_cross_entropy
from sodeep.losses.margin import (
    MultiLabelHingeLoss,
    MultiLabelRankingHingeLoss,
    PairwiseMarginRankingLoss,
    multilabel_hinge_loss,
    multilabel_ranking_hinge_loss,
    pairwise_margin_ranking_loss,
)
from sodeep.losses.rank import (
    HardNegativeRankLoss,
    MapRankLoss,
    RecallRankLoss,
    SpearmanLoss,
    descending_normalized,
    hard_negative_rank_loss,
    map_rank_loss,
    recall_rank_loss,
    spearman_loss,
)

__all__ = [
    "AgeDifferenceLoss",
    "HardNegativeRankLoss",
    "MapRankLoss",
    "MultiLabelHingeLoss",
    "MultiLabelRankingHingeLoss",
    "PairwiseMarginRankingLoss",
    "RecallRankLoss",
    "SpearmanLoss",
    "age_difference_loss",
    "descending_normalized",
    "hard_negative_rank_loss",
    "map_rank_loss",
    "multilabel_hinge_loss",
    "multilabel_ranking_hinge_loss",
    "pairwise_margin_ranking_loss",
    "recall_rank_loss",
    "sigmoid_cross_entropy",
    "spearman_loss",
]
