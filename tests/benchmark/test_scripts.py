import signal

import pytest

from sodeep.benchmark.scripts import INTERRUPTED, run_script


def test_an_interrupted_script_ends_in_one_line_and_status_130(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["bench_example.py"])

    def main():
        print("| table | done |")
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        run_script(main)
    assert signal.getsignal(signal.SIGTERM) is before
    printed = capsys.readouterr()
    assert stopped.value.code == INTERRUPTED == 130
    assert printed.out == "| table | done |\n"
    assert printed.err == (
        "bench_example.py: interrupted; nothing was written, and only a table printed above in full is complete\n"
    )
