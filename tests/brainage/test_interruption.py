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
