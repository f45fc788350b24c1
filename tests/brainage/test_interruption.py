import os
import signal

import pytest

from sodeep.brainage.interruption import SignalStop
from sodeep.run_folder import RunInterrupted


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_outside_a_training_run_stops_at_once(number):
    before = signal.getsignal(number)
    with pytest.raises(RunInterrupted, match="^interrupted at the baselines$"):
        with SignalStop() as stop:
            stop.where = "the baselines"
            os.kill(os.getpid(), number)
            pytest.fail("went on after the signal")
    assert signal.getsignal(number) is before


def test_inside_a_training_run_a_signal_waits_for_the_end_of_the_block():
    finished = []
    with pytest.raises(RunInterrupted, match="^interrupted at the end of l1, seed 0, fold 2$"):
        with SignalStop() as stop, stop.deferred("l1, seed 0, fold 2"):
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("saved")
    assert finished == ["saved"]


def test_a_second_signal_stops_at_once_and_nothing_is_raised_without_one():
    with SignalStop() as stop:
        with stop.deferred("l1, seed 0, fold 0"):
            pass  # no signal: no exception
        with pytest.raises(RunInterrupted, match="l1, seed 1, fold 0"):
            with stop.deferred("l1, seed 1, fold 0"):
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                pytest.fail("the second signal did not stop")


def test_a_signal_during_a_baseline_grid_search_ends_the_search():
    """scikit-learn scores a grid point whose fit raises as NaN and goes on by default: a stop
    signal would then change which penalty a saved baseline uses."""
    import numpy as np
    from sklearn.linear_model import Ridge

    from sodeep.brainage.baselines import grid_search

    class InterruptedAtOnePenalty(Ridge):
        def fit(self, features, ages, sample_weight=None):
            if self.alpha == 1.0:
                os.kill(os.getpid(), signal.SIGINT)
            return super().fit(features, ages, sample_weight)

    generator = np.random.default_rng(0)
    features, ages = generator.normal(size=(30, 3)), generator.uniform(20, 80, size=30)
    with pytest.raises(RunInterrupted, match="^interrupted at the baselines$"):
        with SignalStop() as stop:
            stop.where = "the baselines"
            grid_search(InterruptedAtOnePenalty(), {"alpha": [0.1, 1.0, 10.0]}, features, ages, np.arange(30) % 3)


def test_in_a_run_of_several_processes_a_signal_between_blocks_waits_for_the_next_agreement(monkeypatch):
    """A signal that reaches one process between two training runs must not stop that process
    alone (the other would wait for it at its next collective): it stops at the next block's
    start, where the processes agree."""
    import sodeep.brainage.interruption as interruption

    monkeypatch.setattr(interruption, "in_process_group", lambda: True)
    monkeypatch.setattr(interruption, "on_any_process", lambda flag: flag)  # this process's word is the run's
    with SignalStop() as stop:
        with stop.deferred("l1, seed 0, fold 0"):
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # between two runs: noted, not raised
        assert stop.requested
        with pytest.raises(RunInterrupted, match="^interrupted at the end of l1, seed 0, fold 0$"):
            with stop.deferred("l1, seed 0, fold 1"):
                raise AssertionError("the next run must not start")
    with SignalStop() as stop:  # a second signal stops at once, as always
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(RunInterrupted):
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_python_run_says_how_to_go_on(tmp_path, monkeypatch):
    from sodeep.brainage.commands import run_tabular
    from sodeep.brainage.config import TabularConfig
    from sodeep.brainage.training import AgeRegression

    original = AgeRegression.training_step

    def step(self, batch, batch_index):
        if batch_index == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, batch_index)

    monkeypatch.setattr(AgeRegression, "training_step", step)
    config = TabularConfig(
        dataset="fcon1000", folds=3, seeds=[0], losses=["l1"], max_epochs=2, out=str(tmp_path / "run"), wandb="disabled"
    )
    with pytest.raises(RunInterrupted) as raised:
        run_tabular(config, progress=False)
    assert str(raised.value).startswith("interrupted at l1, seed 0, fold 0, epoch 1")
    assert str(raised.value).endswith("; run_tabular(config, resume=True) goes on from there")
    assert raised.value.summary == "interrupted at l1, seed 0, fold 0, epoch 1"  # what the command line prints


def test_a_signal_while_the_wandb_run_starts_finishes_that_run(tmp_path, monkeypatch):
    """The stop held back while W&B starts is raised at the end of its start: the run it started is
    finished then, not left open to refuse the next command of the process."""
    import sys
    import types

    from sodeep.brainage.commands import wandb_run

    finished = []

    class Run:
        def finish(self):
            finished.append(True)

    def init(**settings):
        os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C lands while the run starts
        return Run()

    fake = types.SimpleNamespace(init=init, run=None, teardown=lambda: None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    record = {"config": {}, "run_id": "abc"}
    with pytest.raises(RunInterrupted), SignalStop() as stop:
        with wandb_run("offline", tmp_path, "tabular", record, stop):
            pytest.fail("went on after the signal")
    assert finished == [True]


@pytest.mark.parametrize("signals", [1, 2])
@pytest.mark.parametrize("during", ["finish", "teardown"])
def test_a_signal_while_the_wandb_run_closes_after_the_report_lets_the_command_end_as_finished(
    tmp_path, monkeypatch, capfd, signals, during
):
    """Every result is written when the W&B run closes (its run finishing, W&B's service shutting
    down): a first signal then leaves the command finished (a scheduler's SIGTERM marks no complete
    job as failed), a second stops at once; W&B's variables are as they were either way."""
    import sys
    import types

    from sodeep.brainage.commands import wandb_run

    def signal_here():
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)

    class Run:
        def finish(self):
            fake.run = None
            if during == "finish":
                signal_here()

    fake = types.SimpleNamespace(run=None, teardown=signal_here if during == "teardown" else lambda: None)
    fake.init = lambda **settings: setattr(fake, "run", Run()) or fake.run
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    record = {"config": {}, "run_id": "abc"}
    with SignalStop() as stop:
        if signals == 1:
            with wandb_run("offline", tmp_path, "tabular", record, stop):
                stop.where = "the report"
        else:
            with pytest.raises(RunInterrupted, match="^interrupted at closing, with every result written$"):
                with wandb_run("offline", tmp_path, "tabular", record, stop):
                    stop.where = "the report"
        assert stop.where == "the report"
    assert "WANDB_DIR" not in os.environ
    error = capfd.readouterr().err
    assert "SIGTERM while closing, with every result written: the command ends as finished" in error
    # A signal while a stopped command closes its run stops it: nothing was finished.
    with pytest.raises(RunInterrupted, match="^interrupted at l1, seed 0, fold 0$"), SignalStop() as stop:
        with wandb_run("offline", tmp_path, "tabular", record, stop):
            stop.where = "l1, seed 0, fold 0"
            raise ValueError("a refusal on the way")
