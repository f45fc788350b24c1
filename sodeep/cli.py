"""The ``sodeep`` console script: ``pretrain``, ``evaluate``, ``export``.

This module is an entry point: it is the only place in the package that parses arguments and
YAML configs, sets W&B's environment and starts loggers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_PRETRAIN_CONFIG: dict[str, Any] = {
    "architecture": "conv",
    "sorter": {},  # keyword config of the architecture, e.g. {"softness": 0.5}
    "lengths": "2-256",  # a range "a-b" or a list of lengths (a mixture)
    "steps": 3000,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "weight_decay": 0.0,
    "warmup_steps": 100,
    "seed": 0,
    "validation_every": 500,
    "checkpoint_every": 100,
    "validation_sequences": 32,
    "out": "runs/pretrain",
    "wandb": "offline",
}


def parse_lengths(value: Any) -> list[int]:
    """``"2-256"`` -> [2, ..., 256]; ``"100"`` or ``[8, 100]`` -> those lengths."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [int(item) for item in value]
    text = str(value).strip()
    if "-" in text:
        low, high = (int(part) for part in text.split("-", 1))
        if low > high:
            raise ValueError(f"length range {text!r} is empty")
        return list(range(low, high + 1))
    return [int(part) for part in text.replace(",", " ").split()]


def configure_wandb_environment(mode: str, directory: Path) -> None:
    """Keep W&B local unless asked otherwise: nothing is sent, no account is needed."""
    os.environ.setdefault("WANDB_MODE", mode if mode != "disabled" else "disabled")
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    directory.mkdir(parents=True, exist_ok=True)
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        os.environ.setdefault(variable, str(directory))


def make_loggers(out: Path, mode: str, name: str, config: dict[str, Any]) -> list:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    loggers: list = [CSVLogger(save_dir=str(out), name="csv", version="")]
    if mode != "disabled":
        configure_wandb_environment(mode, out / "wandb")
        loggers.append(
            WandbLogger(
                project="sodeep", name=name, save_dir=str(out / "wandb"), offline=mode == "offline", config=config
            )
        )
    return loggers


def command_pretrain(arguments: argparse.Namespace) -> int:
    import yaml

    config = dict(DEFAULT_PRETRAIN_CONFIG)
    if arguments.config:
        loaded = yaml.safe_load(Path(arguments.config).read_text()) or {}
        unknown = set(loaded) - set(config)
        if unknown:
            raise SystemExit(f"unknown keys in {arguments.config}: {sorted(unknown)}; known: {sorted(config)}")
        config.update(loaded)
    for key in DEFAULT_PRETRAIN_CONFIG:
        value = getattr(arguments, key, None)
        if value is not None:
            config[key] = value
    if isinstance(config["sorter"], str):
        config["sorter"] = json.loads(config["sorter"])
    lengths = parse_lengths(config["lengths"])
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from sodeep.checkpoints import save_sorter
    from sodeep.evaluation import EVALUATION_LENGTHS
    from sodeep.pretraining import AtomicCheckpointIO, SequenceDataModule, SorterPretraining
    from sodeep.sorters import build_sorter

    L.seed_everything(config["seed"], workers=True, verbose=False)
    sorter = build_sorter(config["architecture"], **config["sorter"])
    if sorter.max_length is not None and max(lengths) > sorter.max_length:
        raise SystemExit(f"lengths go up to {max(lengths)} but the sorter's capacity is {sorter.max_length}")
    validation_lengths = [
        n
        for n in EVALUATION_LENGTHS
        if n >= sorter.min_length and (sorter.max_length is None or n <= sorter.max_length)
    ]
    module = SorterPretraining(
        sorter,
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_steps"],
        total_steps=config["steps"],
    )
    data = SequenceDataModule(
        batch_size=config["batch_size"],
        lengths=lengths,
        seed=config["seed"],
        validation_lengths=validation_lengths,
        validation_sequences=config["validation_sequences"],
    )
    checkpoints = out / "checkpoints"
    last = checkpoints / "last.ckpt"
    resume_from = None
    if arguments.resume:
        if not last.is_file():
            raise SystemExit(f"--resume: no checkpoint at {last}")
        resume_from = str(last)
    trainer = L.Trainer(
        max_steps=config["steps"],
        val_check_interval=min(config["validation_every"], config["steps"]),
        check_val_every_n_epoch=None,
        logger=make_loggers(out, config["wandb"], out.name, config),
        callbacks=[
            ModelCheckpoint(
                dirpath=checkpoints,
                save_last=True,
                every_n_train_steps=min(config["checkpoint_every"], config["steps"]),
                save_top_k=0,
            )
        ],
        plugins=[AtomicCheckpointIO()],
        accelerator="auto",
        devices=1,
        log_every_n_steps=10,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    started = time.time()
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    elapsed = time.time() - started
    metadata = {
        "command": " ".join(sys.argv),
        "config": config,
        "steps": int(trainer.global_step),
        "wall_clock_seconds_this_session": round(elapsed, 1),
        "resumed": resume_from is not None,
    }
    path = save_sorter(module.sorter.cpu(), out / "sorter.pt", metadata)
    (out / "pretrain_summary.json").write_text(json.dumps(metadata, indent=2))
    print(f"trained {trainer.global_step} steps in {elapsed:.0f} s; sorter written to {path}")
    return 0


def command_evaluate(arguments: argparse.Namespace) -> int:
    import torch

    from sodeep.checkpoints import default_sorter_path, load_sorter
    from sodeep.evaluation import EVALUATION_LENGTHS, fidelity_table, format_fidelity_markdown
    from sodeep.sorters import build_sorter

    if arguments.architecture:
        sorter = build_sorter(arguments.architecture, **json.loads(arguments.sorter or "{}"))
        title = f"untrained {arguments.architecture} {sorter.config()}"
    else:
        sorter = load_sorter(arguments.checkpoint)
        title = str(arguments.checkpoint or default_sorter_path())
    lengths = parse_lengths(arguments.lengths) if arguments.lengths else list(EVALUATION_LENGTHS)
    torch.set_grad_enabled(False)
    rows = fidelity_table(sorter, lengths=lengths, sequences_per_cell=arguments.sequences)
    text = format_fidelity_markdown(rows, title=title)
    print(text)
    if arguments.out:
        Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.out).write_text(text + "\n")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps([row.__dict__ for row in rows], indent=1))
    return 0


def command_export(arguments: argparse.Namespace) -> int:
    from sodeep.checkpoints import save_sorter
    from sodeep.pretraining import sorter_from_training_checkpoint

    sorter = sorter_from_training_checkpoint(arguments.checkpoint)
    print(f"wrote {save_sorter(sorter, arguments.out, {'exported_from': str(arguments.checkpoint)})}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sodeep", description="Differentiable sorting with learned sorters.")
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser("pretrain", help="pretrain a sorter on synthetic sequences (Lightning)")
    pretrain.add_argument("--config", help="YAML file; flags override it (see experiments/configs/pretrain.yaml)")
    pretrain.add_argument("--architecture", help="conv, pairwise_sigmoid, original_cnn, original_lstm_large")
    pretrain.add_argument("--sorter", help="JSON config of the architecture, e.g. '{\"softness\": 0.5}'")
    pretrain.add_argument("--lengths", help='a range "2-256" or a list "8,100" (a mixture)')
    pretrain.add_argument("--steps", type=int)
    pretrain.add_argument("--batch-size", dest="batch_size", type=int)
    pretrain.add_argument("--learning-rate", dest="learning_rate", type=float)
    pretrain.add_argument("--seed", type=int)
    pretrain.add_argument("--validation-every", dest="validation_every", type=int)
    pretrain.add_argument(
        "--checkpoint-every", dest="checkpoint_every", type=int, help="steps between resumable checkpoints"
    )
    pretrain.add_argument("--out", help="output directory (checkpoints, CSV and W&B logs, sorter.pt)")
    pretrain.add_argument("--wandb", choices=["offline", "online", "disabled"], help="default offline: nothing sent")
    pretrain.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    pretrain.set_defaults(handler=command_pretrain)

    evaluate = commands.add_parser("evaluate", help="print the fidelity table of a sorter")
    evaluate.add_argument("checkpoint", nargs="?", help="sorter checkpoint (default: the shipped sorter)")
    evaluate.add_argument("--architecture", help="evaluate an untrained sorter of this architecture instead")
    evaluate.add_argument("--sorter", help="JSON config for --architecture")
    evaluate.add_argument("--lengths", help='e.g. "2,3,5,8,16,32,64,100,128,256" (the default)')
    evaluate.add_argument("--sequences", type=int, default=64, help="held-out sequences per (family, n)")
    evaluate.add_argument("--out", help="also write the markdown table here")
    evaluate.add_argument("--json", help="also write the rows as JSON here")
    evaluate.set_defaults(handler=command_evaluate)

    export = commands.add_parser("export", help="turn a Lightning pretraining checkpoint into a sorter checkpoint")
    export.add_argument("checkpoint")
    export.add_argument("out")
    export.set_defaults(handler=command_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    return arguments.handler(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
