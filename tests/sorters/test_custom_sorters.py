"""A sorter of one's own, as the Sorter docstring describes it: registered, it saves, loads and
ranks inside the losses; one that breaks the interface is refused in one line saying why."""

import pytest
import torch
from torch import nn

from sodeep import SpearmanLoss, load_sorter, rank, save_sorter
from sodeep.sorters import SORTERS, PairwiseSigmoidSorter
from sodeep.sorters.base import Sorter


class LearnedTemperatureSorter(Sorter):
    """A pairwise sigmoid whose temperature is a weight."""

    architecture = "learned_temperature_test"

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(float(temperature)).log())

    def rank_rows(self, scores: torch.Tensor) -> torch.Tensor:
        # Descending normalized ranks: 1/n for the largest score (the j = i term adds 1/2).
        above = torch.sigmoid((scores[:, None, :] - scores[:, :, None]) / self.log_temperature.exp().to(scores.dtype))
        return (above.sum(-1) + 0.5) / scores.shape[-1]

    def config(self) -> dict:
        return {"temperature": 0.1}


@pytest.fixture
def registered():
    SORTERS[LearnedTemperatureSorter.architecture] = LearnedTemperatureSorter
    yield LearnedTemperatureSorter
    SORTERS.pop(LearnedTemperatureSorter.architecture)


def test_a_registered_sorter_of_ones_own_saves_loads_and_ranks_in_a_loss(tmp_path, registered):
    sorter = registered()
    with torch.no_grad():
        sorter.log_temperature.fill_(-3.0)
    loaded = load_sorter(save_sorter(sorter, tmp_path / "own.pt"))
    assert type(loaded) is registered and loaded.log_temperature.item() == -3.0
    scores, targets = torch.randn(4, 9), torch.randn(4, 9)
    torch.testing.assert_close(
        SpearmanLoss(sorter=loaded)(scores, targets), SpearmanLoss(sorter=sorter)(scores, targets)
    )


def test_a_sorter_whose_checkpoint_would_load_as_another_class_or_not_at_all_is_not_saved(tmp_path):
    class Subclass(PairwiseSigmoidSorter):  # the parent's architecture name
        pass

    with pytest.raises(
        ValueError,
        match=r"Subclass saves as architecture 'pairwise_sigmoid', which loads as PairwiseSigmoidSorter: set "
        r"architecture = '<name>' on Subclass, a name of its own, and register it, sodeep.sorters.SORTERS\['<name>'\]",
    ):
        save_sorter(Subclass(0.5), tmp_path / "sub.pt")
    with pytest.raises(
        ValueError, match=r"is not registered, so its checkpoint would not load: sodeep.sorters.SORTERS\["
    ):
        save_sorter(LearnedTemperatureSorter(), tmp_path / "own.pt")

    class Nameless(Sorter):
        def rank_rows(self, scores):
            return rank(scores)

        def config(self):
            return {}

    with pytest.raises(ValueError, match="Nameless has no architecture name: set architecture = '<name>'"):
        save_sorter(Nameless(), tmp_path / "nameless.pt")
    assert not list(tmp_path.iterdir())


def test_a_config_that_does_not_rebuild_the_sorter_is_refused_at_saving(tmp_path, registered, monkeypatch):
    monkeypatch.setattr(registered, "config", lambda self: {"t": 0.1})
    with pytest.raises(TypeError, match=r"config\(\) gives \['t'\], which would not rebuild it \(unknown setting 't'"):
        save_sorter(registered(), tmp_path / "own.pt")

    monkeypatch.setattr(registered, "config", lambda self: {"temperature": torch.tensor(0.1)})
    with pytest.raises(TypeError, match=r"config\(\) must be plain JSON .*Tensor is not JSON serializable"):
        save_sorter(registered(), tmp_path / "own.pt")

    class Forwarding(Sorter):  # settings taken as **settings: a checkpoint cannot name them
        architecture = registered.architecture

        def __init__(self, **settings):
            super().__init__()
            self.settings = settings

        def config(self):
            return dict(self.settings)

    monkeypatch.setitem(SORTERS, registered.architecture, Forwarding)
    with pytest.raises(TypeError, match=r"gives \['temperature'\], which would not rebuild it \(unknown setting"):
        save_sorter(Forwarding(temperature=0.1), tmp_path / "own.pt")


def test_a_sorter_that_breaks_the_interface_says_what_it_must_do():
    class Unfinished(Sorter):
        architecture = "unfinished_test"

    with pytest.raises(NotImplementedError, match=r"Unfinished must implement rank_rows\(scores\) -> ranks"):
        Unfinished()(torch.randn(2, 5))
    with pytest.raises(NotImplementedError, match=r"Unfinished must implement config\(\) -> its settings"):
        repr(Unfinished())

    class Averaging(LearnedTemperatureSorter):
        def rank_rows(self, scores):
            return scores.mean(-1)

    with pytest.raises(TypeError, match=r"rank_rows must return ranks of the dtype and shape of its \(B, n\) scores, "):
        Averaging()(torch.randn(3, 5))

    class Widening(LearnedTemperatureSorter):
        def rank_rows(self, scores):
            return super().rank_rows(scores).double()

    with pytest.raises(TypeError, match=r"torch.float32 of shape \(3, 5\), got torch.float64 of shape \(3, 5\)"):
        Widening()(torch.randn(3, 5))


def test_loading_an_unregistered_architecture_says_how_to_register_it(tmp_path, registered):
    path = save_sorter(registered(), tmp_path / "own.pt")
    SORTERS.pop(registered.architecture)
    try:
        with pytest.raises(ValueError, match=r"loads once registered in the process: sodeep.sorters.SORTERS\["):
            load_sorter(path)
    finally:
        SORTERS[registered.architecture] = registered


def test_a_built_in_architecture_name_keeps_its_class():
    from sodeep.sorters import ConvSorter, build_sorter

    class Clash(LearnedTemperatureSorter):
        architecture = "conv"

    with pytest.raises(
        ValueError, match=r"'conv' is the architecture of sodeep's built-in ConvSorter, .*register Clash"
    ):
        SORTERS["conv"] = Clash
    with pytest.raises(ValueError, match="built-in PairwiseSigmoidSorter"):
        SORTERS.update(pairwise_sigmoid=Clash)
    SORTERS["conv"] = ConvSorter  # the same class: nothing changes
    assert SORTERS["conv"] is ConvSorter and type(load_sorter()) is ConvSorter
    with pytest.raises(ValueError, match=r"unknown sorter architecture 'mine'; .*register it first, sodeep.sorters"):
        build_sorter("mine")


def test_reset_parameters_gives_a_sorters_own_weights_their_starting_values(registered):
    with torch.device("meta"):
        sorter = registered(temperature=0.5)
    sorter.to_empty(device="cpu")
    sorter.reset_parameters()
    # config() rebuilds it at temperature 0.1: the value a sorter of its settings starts with.
    assert not sorter.weights_unset and sorter.log_temperature.item() == pytest.approx(float(torch.tensor(0.1).log()))


def test_pretraining_an_analytic_sorter_names_the_learned_ones_beside_a_class_that_needs_settings(tmp_path):
    from sodeep.pretraining import PretrainConfig, pretrain

    class NeedsLength(LearnedTemperatureSorter):
        architecture = "needs_length_test"

        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n

        def config(self) -> dict:
            return {"n": self.n}

    SORTERS[NeedsLength.architecture] = NeedsLength
    try:
        config = PretrainConfig(architecture="pairwise_sigmoid", steps=2, batch_size=4, lengths="2-8")
        config.out, config.wandb = str(tmp_path / "run"), "disabled"
        with pytest.raises(ValueError, match=r"has no weights to train: .*pretrain one of 'conv', .*'original_cnn'"):
            pretrain(config)
    finally:
        SORTERS.pop(NeedsLength.architecture)
    assert not (tmp_path / "run").exists()


def test_nan_ranks_from_a_sorter_are_named_as_nan():
    def broken(scores):
        return torch.full_like(scores, float("nan"))

    with pytest.raises(ValueError, match="the sorter returned NaN ranks for finite scores: check the sorter"):
        SpearmanLoss(sorter=broken)(torch.randn(2, 5), torch.randn(2, 5))
