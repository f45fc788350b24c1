"""Small inputs of the brain-age commands and the command lines that train on them in a second
or two, for the tests of the commands."""

import nibabel
import numpy as np


def write_table(path, subjects=40, seed=0):
    """A table of ``subjects`` rows: sub_id, age, site and two thickness-like features."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 80, subjects)
    lines = ["sub_id,age,site,lh_a,rh_a"] + [
        f"s{i},{age:.2f},{'AB'[i % 2]},{3 - 0.01 * age + rng.normal(0, 0.05):.4f},{rng.normal(2.5, 0.1):.4f}"
        for i, age in enumerate(ages)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_manifest(folder, subjects=8, side=12):
    """NIfTI volumes (a noisy bright cube whose size follows age) and their manifest."""
    rng = np.random.default_rng(0)
    lines = ["path,age,site"]
    for index in range(subjects):
        data = np.zeros((side, side, side), dtype=np.float32)
        inner = 2 + index % 3
        data[inner:-inner, inner:-inner, inner:-inner] = 1 + rng.random((side - 2 * inner,) * 3)
        nibabel.save(nibabel.Nifti1Image(data, np.diag([4.0, 4.0, 4.0, 1.0])), str(folder / f"s{index}.nii.gz"))
        lines.append(f"s{index}.nii.gz,{20 + 7 * index},{'AB'[index % 2]}")
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_inputs(folder):
    """``folder`` with table.csv and manifest.csv (and its volumes) written in it."""
    write_table(folder / "table.csv")
    write_manifest(folder)
    return folder


def tiny_argv(command, inputs):
    """``sodeep brainage <command> ...`` settings that train one preset in a second or two."""
    network = ["--channels", "2", "4", "--head-channels", "4", "--batch-size", "4"]
    return {
        "tabular": ["--csv", str(inputs / "table.csv"), "--folds", "2", "--batch-size", "8"],
        "synthetic": ["--train", "8", "--test", "4", *network],
        "nifti": ["--manifest", str(inputs / "manifest.csv"), "--shape", "12", "12", "12", "--folds", "2", *network],
    }[command] + ["--losses", "l1", "--seeds", "0", "--max-epochs", "2"]


def folder_state(folder):
    """Every file under ``folder`` with its modification time: what "left untouched" compares."""
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


_SIMULATED = {}


def remembering(simulate_subject):
    """``simulate_subject`` that simulates each (seed, index, settings) once per test session: the
    simulator is tested in test_synthetic_mri.py; the commands' tests only need its subjects."""

    def simulate(seed, index, settings=None, **options):
        key = (seed, index, settings)
        if key not in _SIMULATED:
            arguments = (seed, index) if settings is None else (seed, index, settings)
            _SIMULATED[key] = simulate_subject(*arguments, **options)
        volume, truth = _SIMULATED[key]
        return volume.clone(), dict(truth)

    return simulate
