import csv
import os
import shutil
import signal

import pytest
import torch

from sodeep.brainage.interruption import SignalStop
from sodeep.brainage.models import AgeMLP
from sodeep.brainage.training import AgeRegression, check_training_checkpoint, fit_age_model
from sodeep.run_folder import RunInterrupted

RUN = {"preset": "l1", "seed": 0, "fold": 0}


def _fit(out, **options):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, 5, generator=generator)
    ages = inputs[:, 0] * 10 + 50 + torch.randn(40, generator=generator)
    torch.manual_seed(0)
    model = AgeMLP(5, hidden=(8,), dropout=0.2, age_offset=50.0)
    return fit_age_model(
        model,
        "l1",
        (inputs[:30], ages[:30]),
        (inputs[30:], ages[30:]),
        out=out,
        csv_directory=out / "curves",
        batch_size=8,
        max_epochs=6,
        patience=10,
        learning_rate=0.05,
        run=RUN,
        **options,
    )


def test_an_interrupted_fit_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    _, straight = _fit(tmp_path / "straight")
    original = AgeRegression.training_step
    sent = []

    def step(self, batch, batch_index):
        if self.current_epoch == 3 and not sent:
            sent.append(os.kill(os.getpid(), signal.SIGINT))
        return original(self, batch, batch_index)

    monkeypatch.setattr(AgeRegression, "training_step", step)
    with pytest.raises(RunInterrupted, match="^interrupted at l1, seed 0, fold 0, epoch 4$"):
        with SignalStop() as stop, stop.deferred("l1, seed 0, fold 0"):
            _fit(tmp_path / "first", resume=True, stop=stop)
    assert check_training_checkpoint(tmp_path / "first" / "last.ckpt", RUN) == 3 * 4  # three whole epochs
    callbacks = torch.load(tmp_path / "first" / "last.ckpt", weights_only=True)["callbacks"]
    first_seconds = callbacks["Timer"]["time_elapsed"]["train"]
    # The folder may move between the two sessions: the best score goes with it.
    shutil.move(tmp_path / "first", tmp_path / "moved")
    _, resumed = _fit(tmp_path / "moved", resume=True)
    assert resumed["resumed_at_epoch"] == 3 and resumed["best_val_mae"] == straight["best_val_mae"]
    assert resumed["train_seconds"] > first_seconds > 0  # the training time of the first fit's epochs counts
    last = torch.load(tmp_path / "moved" / "last.ckpt", weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(last[key], expected[key]) for key in expected)  # dropout and shuffling resumed too
    epochs = [row["epoch"] for row in csv.DictReader(open(tmp_path / "moved" / "curves" / "metrics.csv"))]
    assert epochs == [row["epoch"] for row in csv.DictReader(open(tmp_path / "straight" / "curves" / "metrics.csv"))]


def test_a_fit_without_resume_starts_afresh_and_a_checkpoint_names_its_run(tmp_path):
    _fit(tmp_path)
    _, again = _fit(tmp_path, resume=False)
    assert again["resumed_at_epoch"] is None and again["epochs"] == 6
    rows = list(csv.DictReader(open(tmp_path / "curves" / "metrics.csv")))
    assert [row["epoch"] for row in rows].count("0") == 2  # the epoch's training loss and its validation, once
    # Per-epoch curves: one mean training loss and one validation MAE an epoch.
    assert [row["epoch"] for row in rows if row["train/loss"]] == [str(epoch) for epoch in range(6)]
    assert [row["epoch"] for row in rows if row["val/mae"]] == [str(epoch) for epoch in range(6)]
    with pytest.raises(ValueError, match=r"belongs to training run \{'preset': 'l1', 'seed': 0, 'fold': 0\}, not"):
        check_training_checkpoint(tmp_path / "last.ckpt", RUN | {"fold": 1})


def test_a_batch_of_one_subject_trains_unless_the_loss_compares_subjects(tmp_path):
    from sodeep.brainage.losses import BrainAgeLoss

    inputs, ages = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), torch.linspace(20, 80, 12)

    def fit(loss, name):
        model = AgeMLP(3, hidden=(4,), age_offset=50.0)
        data = (inputs[:9], ages[:9]), (inputs[9:], ages[9:])
        return fit_age_model(model, loss, *data, out=tmp_path / name, batch_size=1, max_epochs=1, patience=1)

    assert fit("l1", "l1")[1]["epochs"] == 1
    with pytest.raises(ValueError, match=r"batch_size must be >= 2 with presets \['l1\+agediff'\]"):
        fit("l1+agediff", "agediff")
    with pytest.raises(ValueError, match="batch_size must be >= 2 with a BrainAgeLoss that has a rank or age-diff"):
        fit(BrainAgeLoss("mse", spearman_weight=0.0, age_difference_weight=1.0), "module")
    assert not (tmp_path / "agediff").exists() and not (tmp_path / "module").exists()
