"""On a CUDA device, the sorters, losses and commands give what they give on the CPU (skipped
without CUDA)."""

import json
import typing

import pytest
import torch

from sodeep import (
    ConvSorter,
    NeuralSortSorter,
    OriginalCNNSorter,
    OriginalLSTMLargeSorter,
    PairwiseSigmoidSorter,
    SoftSortSorter,
    load_sorter,
    rank,
)
from sodeep.brainage import BrainAgeLoss, TabularConfig, run_tabular
from sodeep.cli import main
from sodeep.losses import (
    AgeDifferenceLoss,
    HardNegativeRankLoss,
    MapRankLoss,
    MultiLabelHingeLoss,
    MultiLabelRankingHingeLoss,
    PairwiseMarginRankingLoss,
    RecallRankLoss,
    SpearmanLoss,
)
from sodeep.ranks import TieMethod

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CUDA = torch.device("cuda")


def inputs(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "rows": torch.randn(4, 50, generator=generator),
        "targets": torch.randn(4, 50, generator=generator),
        "ages": 20 + 60 * torch.rand(32, generator=generator),
        "square": torch.randn(12, 12, generator=generator),
        "labels": (torch.rand(16, 5, generator=generator) < 0.4).float(),
        "class_scores": torch.randn(16, 5, generator=generator),
        "mask": torch.rand(16, 5, generator=generator) < 0.8,
    }


LOSSES = {
    "spearman": (lambda: SpearmanLoss(), ("rows", "targets")),
    "spearman_l1": (lambda: SpearmanLoss(l1_weight=0.5), ("rows", "targets")),
    "spearman_pairwise": (lambda: SpearmanLoss(sorter=PairwiseSigmoidSorter(0.1)), ("rows", "targets")),
    "map": (lambda: MapRankLoss(), ("class_scores", "labels")),
    "recall": (lambda: RecallRankLoss(), ("square",)),
    "hard_negative": (lambda: HardNegativeRankLoss(margin=0.2, hard_negatives=3), ("square",)),
    "age_difference": (lambda: AgeDifferenceLoss(), ("ages", "ages_true")),
    "brain_age_cheng2021": (lambda: BrainAgeLoss.from_preset("cheng2021"), ("ages", "ages_true")),
    "pairwise_margin": (lambda: PairwiseMarginRankingLoss(margin=0.5), ("class_scores", "labels", "mask")),
    "pairwise_margin_hard": (
        lambda: PairwiseMarginRankingLoss(hard_negatives=2),
        ("class_scores", "labels", "mask"),
    ),
    "multilabel_hinge": (lambda: MultiLabelHingeLoss(5, margin=[0.5, 1, 1, 2, 0.1]), ("class_scores", "labels")),
    "multilabel_hinge_adaptive": (lambda: MultiLabelHingeLoss(5, adaptive=True), ("class_scores", "labels")),
    "multilabel_ranking_hinge": (lambda: MultiLabelRankingHingeLoss(), ("class_scores", "labels", "mask")),
}


def arguments(names, seed=0):
    tensors = inputs(seed)
    tensors["ages_true"] = tensors["ages"].flip(0) + torch.randn(32, generator=torch.Generator().manual_seed(1))
    return [tensors[name].clone() for name in names]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_loss_and_its_gradient_on_cuda_match_the_cpu(name):
    build, names = LOSSES[name]
    values, gradients, states = {}, {}, {}
    for device in ("cpu", "cuda"):
        loss = build().to(device)
        tensors = [tensor.to(device) for tensor in arguments(names)]
        tensors[0].requires_grad_(True)
        value = loss(*tensors)
        value.backward()
        values[device], gradients[device] = value.detach().cpu(), tensors[0].grad.cpu()
        states[device] = {key: tensor.cpu() for key, tensor in loss.state_dict().items()}
    torch.testing.assert_close(values["cuda"], values["cpu"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gradients["cuda"], gradients["cpu"], rtol=1e-3, atol=1e-5)
    for key in states["cpu"]:  # adaptive margins move alike
        torch.testing.assert_close(states["cuda"][key], states["cpu"][key], rtol=1e-4, atol=1e-5)


SORTERS = {
    "shipped": lambda: load_sorter(),
    "shipped_floor": lambda: load_sorter(temperature_floor=0.1),
    "conv_untrained": lambda: ConvSorter(capacity=256),
    "pairwise": lambda: PairwiseSigmoidSorter(0.1),
    "neuralsort": lambda: NeuralSortSorter(0.1),
    "softsort": lambda: SoftSortSorter(0.1),
    "original_cnn": lambda: OriginalCNNSorter(50),
    "original_lstm": lambda: OriginalLSTMLargeSorter(50, hidden_size=32),
}


@pytest.mark.parametrize("name", sorted(SORTERS))
def test_a_sorter_on_cuda_matches_the_cpu(name):
    torch.manual_seed(0)
    sorter = SORTERS[name]()
    scores = torch.randn(4, 50).mul(3).round()  # ties
    on_cpu = sorter(scores)
    on_cuda = sorter.to(CUDA)(scores.to(CUDA))
    assert on_cuda.device.type == "cuda" and on_cuda.dtype == on_cpu.dtype
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64])
def test_exact_ranks_on_cuda_match_the_cpu(dtype):
    scores = torch.randint(-20, 20, (3, 3000)).to(dtype)
    for ties in typing.get_args(TieMethod):
        for normalized in (True, False):
            expected = rank(scores, ties=ties, normalized=normalized)
            torch.testing.assert_close(rank(scores.to(CUDA), ties=ties, normalized=normalized).cpu(), expected)


def test_a_compiled_loss_on_cuda_matches_eager():
    loss = SpearmanLoss().to(CUDA)
    compiled = torch.compile(loss, fullgraph=True)
    predictions, targets = (tensor.to(CUDA) for tensor in arguments(("rows", "targets")))
    eager_predictions = predictions.clone().requires_grad_(True)
    compiled_predictions = predictions.clone().requires_grad_(True)
    expected = loss(eager_predictions, targets)
    expected.backward()
    value = compiled(compiled_predictions, targets)
    value.backward()
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled_predictions.grad, eager_predictions.grad, rtol=1e-3, atol=1e-6)


def test_pretraining_and_evaluation_run_on_a_gpu(tmp_path):
    out = tmp_path / "run"
    flags = ["--steps", "4", "--batch-size", "8", "--lengths", "2-24", "--sorter", '{"capacity": 32}']
    flags += ["--validation-every", "2", "--wandb", "disabled", "--accelerator", "gpu"]
    assert main(["pretrain", *flags, "--out", str(out)]) == 0
    sorter = load_sorter(out / "sorter.pt")
    assert sorter(torch.randn(2, 20)).shape == (2, 20)
    table = tmp_path / "fidelity.json"
    assert main(["evaluate", str(out / "sorter.pt"), "--lengths", "8,24", "--json", str(table)]) == 0
    assert json.loads(table.read_text())


def test_brain_age_cross_validation_runs_on_a_gpu(tmp_path):
    config = TabularConfig(
        dataset="fcon1000",
        losses=["l1+spearman+agediff"],
        folds=2,
        seeds=[0],
        max_epochs=2,
        wandb="disabled",
        accelerator="gpu",
        out=str(tmp_path / "tabular"),
    )
    run_tabular(config, progress=False)
    assert json.loads((tmp_path / "tabular" / "results.json").read_text())
