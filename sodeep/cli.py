"""The ``sodeep`` console script: parses arguments and dispatches to the library.

Commands: ``pretrain`` (:func:`sodeep.pretraining.pretrain`), ``evaluate``
(:func:`sodeep.evaluation.fidelity_table`), ``export``, the brain-age application's
``brainage {tabular, synthetic, nifti}`` (:mod:`sodeep.brainage.cli`; its packages come with the
``brainage`` extra) and ``bench``, the comparison of rankers (:mod:`sodeep.benchmark.cli`).  Defaults come
from the config dataclasses (:class:`sodeep.config.PretrainConfig`), which YAML files and the
Python API read too.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sodeep.config import (
    MAX_VALIDATION_SEQUENCES,
    WANDB_DEFAULT_TEXT,
    WANDB_MODES,
    PretrainConfig,
    checking_yaml_settings,
    config_from_mapping,
    integer,
    lengths_summary,
    parse_json_object,
    parse_lengths,
    python_literal,
    read_yaml_mapping,
    without_underscores,
)
from sodeep.files import os_error_line
from sodeep.run_folder import INTERRUPTED, RunInterrupted, check_output_outside_run_folders, enclosing_run_folder
from sodeep.sorters import REGISTER_HINT_END, REGISTER_HINT_START
from sodeep.wording import advice_spelling

#: The seed of the weights of an untrained sorter that ``evaluate --architecture`` measures.
UNTRAINED_WEIGHTS_SEED = 0

#: Help of each pretraining setting (its default is added from :class:`PretrainConfig`).
PRETRAIN_HELP = {
    "architecture": "sorter architecture (see sodeep.sorters.SORTERS)",
    "sorter": "JSON config of the architecture, e.g. '{\"softness\": 0.5}'; its keys override those of "
    "the --config YAML's sorter when the architecture is the same (another --architecture drops them)",
    "init_from": "sorter checkpoint or finished pretraining run folder to start from, or none (its settings, not "
    "those of the --config YAML's sorter; --architecture must name its architecture; --sorter may change the "
    "settings that change no weight shape)",
    "lengths": 'sequence lengths: a range "2-256" or a list "8,100"; each batch draws one',
    "families": "synthetic families to train and validate on: all, or names of sodeep.synthetic.FAMILIES "
    'such as "uniform,ties,cauchy" (the order is part of the stream)',
    "affine_probability": "chance that a training sequence gets a random positive scale and shift (no change "
    "for an affine-invariant sorter, such as conv, but float rounding)",
    "steps": "optimizer steps",
    "batch_size": "sequences per step",
    "learning_rate": "AdamW peak learning rate (warm-up, then cosine decay)",
    "weight_decay": "AdamW weight decay",
    "warmup_steps": "linear warm-up steps",
    "seed": "seed of the data stream and the initial weights",
    "validation_every": "steps between validations on held-out sequences",
    "checkpoint_every": "steps between resumable checkpoints",
    "validation_sequences": "held-out sequences per (family, n) cell (at most 4096)",
    "out": "run folder: checkpoints, CSV and W&B logs, sorter.pt",
    "wandb": "offline (nothing is sent), online or disabled",
    "data_workers": "processes making the training batches while the sorter trains (0: in the training process)",
    "accelerator": "Lightning accelerator: auto, cpu, gpu, ... (docs/scaling.md)",
    "devices": "devices per node: a count, auto, or (GPUs) -1 for all or indices like 0,2; each takes batch_size "
    "sequences a step",
    "strategy": "Lightning strategy, e.g. ddp for one process per device (auto: Lightning's choice, DDP where there are several devices)",
    "num_nodes": "machines of a multi-node run (srun or torchrun starts their processes)",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_pretrain_parser(commands: Any) -> None:
    """``sodeep pretrain``: one flag per :class:`PretrainConfig` field, default shown."""
    parser = commands.add_parser(
        "pretrain",
        help="pretrain a sorter on synthetic sequences (Lightning)",
        description="Pretrain a sorter with L1 to the exact ranks of synthetic sequences. "
        "Settings: defaults < --config YAML < flags.",
    )
    parser.add_argument(
        "--config",
        type=os.path.expanduser,
        help="YAML file of settings (a clone of sodeep holds experiments/configs/pretrain.yaml, the "
        "shipped sorter's; its settings are the defaults but for the sorter's softness, 0.1)",
    )
    for item in dataclasses.fields(PretrainConfig):
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        number = isinstance(default, (int, float)) and not isinstance(default, bool)
        value_type = without_underscores(type(default)) if number else str
        value_type = str if item.name == "devices" else value_type  # also "auto" and "0,2"
        shown = json.dumps(default) if isinstance(default, dict) else default
        shown = WANDB_DEFAULT_TEXT if item.name == "wandb" else shown
        choices = list(WANDB_MODES) if item.name == "wandb" else None
        parser.add_argument(
            _flag(item.name),
            dest=item.name,
            type=value_type,
            choices=choices,
            help=f"{PRETRAIN_HELP[item.name]} (default: {shown})",
        )
    folder = parser.add_mutually_exclusive_group()
    folder.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    folder.add_argument("--overwrite", action="store_true", help="clear OUT first, whatever run it holds")
    parser.set_defaults(handler=command_pretrain)


def pretrain_config(arguments: argparse.Namespace) -> PretrainConfig:
    """Defaults, overridden by ``--config`` YAML, overridden by flags; checked."""
    settings = read_yaml_mapping(arguments.config) if arguments.config else {}
    # batch-size (as the flag is spelt) and batch_size name one setting, as in brain-age configs; an
    # unknown key keeps its own spelling for the message that refuses it.
    known = {item.name for item in dataclasses.fields(PretrainConfig)}
    settings = {
        key.replace("-", "_") if isinstance(key, str) and key.replace("-", "_") in known else key: value
        for key, value in settings.items()
    }
    source = arguments.config or "the flags"
    from_file = set(settings)  # less those a flag overrides, below
    recorded_architecture = settings.get("architecture", PretrainConfig.architecture)
    same_architecture = arguments.architecture in (None, recorded_architecture)
    # The YAML's sorter settings are those of a fresh sorter of its own architecture: another
    # --architecture drops them, and so does --init-from, whose sorter has its own.
    # (A YAML's sorter settings that go with its own init_from go with it when the flag replaces it.)
    from sodeep.checkpoints import same_sorter_source

    flag_start = arguments.init_from
    starts_elsewhere = (
        flag_start is not None
        and flag_start.strip().lower() != "none"
        and not same_sorter_source(flag_start, settings.get("init_from"))
    )
    if not same_architecture or starts_elsewhere:
        settings.pop("sorter", None)
    for item in dataclasses.fields(PretrainConfig):
        value = getattr(arguments, item.name)
        if value is None:
            continue
        if item.name == "sorter" and settings.get("sorter") is not None and same_architecture:
            # The flag's keys override the YAML's one by one: --sorter '{"band": 4}' keeps its softness.
            configured = parse_json_object(settings["sorter"], f"{source}: sorter")
            value = {**configured, **parse_json_object(value, "--sorter")}
        settings[item.name] = value
        from_file.discard(item.name)
    try:
        with checking_yaml_settings({str(key) for key in from_file}):
            return config_from_mapping(PretrainConfig, settings, source)
    except (TypeError, ValueError) as error:
        # A refused value that the YAML file gave is named with the file, as an unknown key is.
        if str(error).split(" ", 1)[0] in from_file:
            raise type(error)(f"{source}: {error}") from None
        raise


def command_pretrain(arguments: argparse.Namespace) -> int:
    from sodeep.run_folder import resumes_started_run
    from sodeep.wandb_setup import check_wandb_login_before_a_run

    config = pretrain_config(arguments)
    # An online run without a W&B login refused in a second, before Lightning loads (the run
    # checks again once its folder is settled).
    check_wandb_login_before_a_run(
        config.wandb,
        config.out,
        resume=(arguments.resume or resumes_started_run(config.out, arguments.overwrite)) and not arguments.overwrite,
        config_file=arguments.config if arguments.wandb is None else None,
    )
    from sodeep.checkpoints import RUN_SORTER
    from sodeep.pretraining import holds_a_checkpoint, pretrain, run_finished, saved_step_of_this_run
    from sodeep.run_folder import (
        check_no_input_inside,
        restore_a_killed_replacement,
        resumes_started_run,
        stop_signals_as_interrupts,
    )

    if arguments.overwrite and arguments.config:  # the YAML file is read: clearing OUT must not delete it
        check_no_input_inside(Path(config.out), {"config": arguments.config})
    sorter_file = Path(config.out) / RUN_SORTER
    from sodeep.runs import global_rank

    if global_rank() == 0:  # before the folder is read: a replacement killed there left its run aside
        restore_a_killed_replacement(Path(config.out), saved=holds_a_checkpoint)
    resume = arguments.resume or resumes_started_run(config.out, arguments.overwrite)
    # As pretrain() decides it, before the run: a resume that rewrote a missing summary trained.
    finished_before = resume and run_finished(Path(config.out), config.steps)
    started = time.time()
    # Ctrl-C and SIGTERM alike, before training starts too, where Lightning's handler is not yet set.
    try:
        with stop_signals_as_interrupts():
            pretrain(config, resume=resume, overwrite=arguments.overwrite)
    except KeyboardInterrupt:
        # A second signal while the first one's checkpoint was saved, or during the cleanup after
        # it: the run resumes from the checkpoint on disk, as after one signal.
        # The checkpoint on disk is named only where it is this run's (with --overwrite, only one
        # written since the start: the folder may still hold the run it was to replace).
        _ignore_stop_signals_from_now_on(arguments)
        step = saved_step_of_this_run(config, since=started if arguments.overwrite else None)
        if step is None:
            raise
        raise RunInterrupted(step) from None
    if global_rank() != 0:  # a DDP process other than rank 0: rank 0 writes and reports
        return 0
    if finished_before:
        print(f"{config.out} holds a finished run: nothing to train; its sorter is {sorter_file}")
        return 0
    summary = json.loads((Path(config.out) / "pretrain_summary.json").read_text())
    from sodeep.sweeps.summary import write_trial_summary

    write_trial_summary(summary["config"], summary["validation"])  # inside `sodeep sweep run` only
    _ignore_stop_signals_from_now_on(arguments)
    print(f"sorter written to {Path(config.out) / RUN_SORTER}")
    return 0


def command_evaluate(arguments: argparse.Namespace) -> int:
    import torch

    from sodeep.checkpoints import default_sorter_path, load_sorter
    from sodeep.evaluation import (
        EVALUATION_LENGTHS,
        fidelity_rows_json,
        fidelity_table,
        format_fidelity_markdown,
        is_fidelity_rows,
        is_fidelity_table,
    )
    from sodeep.files import atomic_write_json, atomic_write_text, json_output_problem, replaceable_output_problem
    from sodeep.sorters import build_sorter

    if arguments.checkpoint and arguments.architecture:
        raise ValueError(
            f"give a checkpoint or --architecture, not both (a trained sorter or an untrained one); got "
            f"{arguments.checkpoint} and --architecture {arguments.architecture}"
        )
    if arguments.sorter and not arguments.architecture:
        raise ValueError(
            "--sorter configures the untrained sorter of --architecture (a checkpoint holds its own settings); "
            "add --architecture NAME or leave --sorter out"
        )
    if not 1 <= arguments.sequences <= MAX_VALIDATION_SEQUENCES:
        raise ValueError(
            f"--sequences must be in 1..{MAX_VALIDATION_SEQUENCES}, got {arguments.sequences} (that many sequences per "
            "family and length are held in memory)"
        )
    if arguments.out and arguments.json and Path(arguments.out).resolve() == Path(arguments.json).resolve():
        raise ValueError(f"--out and --json name the same file, {arguments.out}; give each its own path")
    problems = (
        arguments.out and replaceable_output_problem(arguments.out, is_fidelity_table, "a fidelity table"),
        arguments.json and json_output_problem(arguments.json, is_fidelity_rows, "fidelity rows"),
    )
    for flag, problem in zip(("--out", "--json"), problems):
        if problem:
            raise ValueError(f"{flag}: {problem}; choose another path")
    for flag, path in (("--out", arguments.out), ("--json", arguments.json)):
        if path:
            check_output_outside_run_folders(path, flag)
    if arguments.architecture:
        options = parse_json_object(arguments.sorter or "{}", "--sorter")
        with torch.random.fork_rng(devices=[]):  # the same untrained weights on every run, the caller's state kept
            torch.manual_seed(UNTRAINED_WEIGHTS_SEED)
            sorter = build_sorter(arguments.architecture, **options)
        title = f"untrained {arguments.architecture} {sorter.config()}, weights of seed {UNTRAINED_WEIGHTS_SEED}"
    else:
        sorter = load_sorter(arguments.checkpoint)
        title = arguments.checkpoint or f"the shipped sorter ({default_sorter_path().name})"
    lengths = list(EVALUATION_LENGTHS) if arguments.lengths is None else parse_lengths(arguments.lengths)
    outside = [n for n in lengths if n < sorter.min_length or (sorter.max_length is not None and n > sorter.max_length)]
    if outside and len(outside) < len(lengths):
        where = (
            f"not the n = {sorter.min_length} the sorter takes"
            if sorter.min_length == sorter.max_length
            else f"outside the sorter's range {sorter.min_length}..{sorter.max_length}"
        )
        if arguments.lengths is not None:
            one = len(outside) == 1
            within = (
                f"--lengths {sorter.min_length}"
                if sorter.min_length == sorter.max_length
                else f"lengths from {sorter.min_length} to {sorter.max_length}"
            )
            raise ValueError(
                f"{'length' if one else 'lengths'} {lengths_summary(outside)} {'is' if one else 'are'} {where}; "
                f"give {within}"
            )
        print(f"sodeep evaluate: the default lengths {lengths_summary(outside)} are {where}: left out", file=sys.stderr)
    with torch.no_grad():
        rows = fidelity_table(
            sorter, lengths=lengths, sequences_per_cell=arguments.sequences, progress=ProgressEvery(10.0, "evaluate")
        )
    text = format_fidelity_markdown(rows, title=title)
    print(text)
    outputs = [(path, what) for path, what in ((arguments.out, "table"), (arguments.json, "rows")) if path]
    # The checks above let through only an empty file (or list) or one an evaluation wrote.
    replaced = [(path, what) for path, what in outputs if _holds_results(Path(path))]
    if arguments.out:
        atomic_write_text(arguments.out, text + "\n")
    if arguments.json:
        atomic_write_json(arguments.json, [{"sorter": title, **row} for row in fidelity_rows_json(rows)])
    for path, what in replaced:
        print(f"sodeep evaluate: replaced the {what} an earlier evaluation wrote in {path}", file=sys.stderr)
    return 0


def _holds_results(path: Path) -> bool:
    """Whether ``path`` is a file with something in it: not blank, and not an empty JSON list."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        return False
    try:
        return bool(text.strip()) and json.loads(text) != []
    except ValueError:  # not JSON: a table
        return True


class ProgressEvery:
    """``progress(done, total)`` that prints ``NAME: DONE of TOTAL cells`` on stderr at most once
    every ``seconds`` (none for work that ends sooner)."""

    def __init__(self, seconds: float, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.name, self.clock = seconds, name, clock
        self.last = clock()

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.last >= self.seconds and done < total:
            self.last = now
            print(f"{self.name}: {done:,} of {total:,} cells", file=sys.stderr, flush=True)


def command_export(arguments: argparse.Namespace) -> int:
    from sodeep.checkpoints import load_sorter, recorded_command, save_sorter
    from sodeep.files import writable_file_problem
    from sodeep.pretraining import run_summary_at, sorter_from_training_checkpoint

    out = Path(arguments.out)
    problem = writable_file_problem(out)
    if problem:
        raise ValueError(f"{problem}; choose another path")
    run_folder = enclosing_run_folder(out)
    if run_folder is not None:  # a run's files are its command's: a sorter there would pass for the run's own
        raise ValueError(
            f"{out} is inside the run folder {run_folder}, whose files its command writes; export to a path outside it"
        )
    if out.exists() and not (out.is_file() and out.stat().st_size == 0):  # an empty file may be replaced
        try:
            load_sorter(out)
        except ValueError:
            raise ValueError(f"{out} exists and is not a sorter checkpoint; choose another path") from None
        if not arguments.overwrite:
            raise ValueError(f"{out} already holds a sorter checkpoint; add --overwrite to replace it")
    sorter = sorter_from_training_checkpoint(arguments.checkpoint)
    metadata = {"exported_from": str(Path(arguments.checkpoint).resolve()), **sorter.checkpoint_metadata}
    source = Path(arguments.checkpoint).resolve()  # as exported_from names it (a link: where it leads)
    own = source.is_dir() or (source.name == "last.ckpt" and source.parent.name == "checkpoints")
    folder = source if source.is_dir() else source.parent.parent  # a run's checkpoints/last.ckpt
    finished = own and metadata["step"] is not None and recorded_command(folder) == "pretrain"
    summary = run_summary_at(folder, metadata["step"]) if finished else None
    if summary is not None:  # a finished run: its command, settings and validation, as its sorter.pt has
        metadata = {**summary, **metadata}
    known = metadata["step"] is not None and metadata["of_steps"] is not None
    progress = f" (step {metadata['step']} of {metadata['of_steps']})" if known else ""
    print(f"wrote {save_sorter(sorter, arguments.out, metadata)}{progress}")
    return 0


def add_evaluate_parser(commands: Any) -> None:
    evaluate = commands.add_parser("evaluate", help="print the fidelity table of a sorter")
    evaluate.add_argument(
        "checkpoint",
        nargs="?",
        type=os.path.expanduser,  # ~ in the home folder, also when quoted, as every path the commands take
        help="sorter checkpoint or pretraining run folder (default: the shipped sorter)",
    )
    evaluate.add_argument(
        "--architecture",
        help="evaluate an untrained sorter of this architecture instead of a checkpoint (weights of seed 0)",
    )
    evaluate.add_argument("--sorter", help="JSON config of the --architecture sorter (only with --architecture)")
    evaluate.add_argument("--lengths", help='lengths, e.g. "5,100" (default: 2,3,5,8,16,32,64,100,128,256)')
    evaluate.add_argument(
        "--sequences",
        type=integer,
        default=64,
        help="held-out sequences per (family, n) (default: 64); one (family, n) cell is made at a time, about 45 "
        "bytes per score while it is made: 3 GB for 4096 sequences at n = 16384",
    )
    evaluate.add_argument(
        "--out", type=os.path.expanduser, help="also write the markdown table here (replacing only a table it wrote)"
    )
    evaluate.add_argument(
        "--json", type=os.path.expanduser, help="also write the rows as JSON here (replacing only rows it wrote)"
    )
    evaluate.set_defaults(handler=command_evaluate)


def add_export_parser(commands: Any) -> None:
    export = commands.add_parser("export", help="turn a Lightning pretraining checkpoint into a sorter checkpoint")
    export.add_argument(
        "checkpoint",
        type=os.path.expanduser,
        help="a pretraining checkpoint, e.g. runs/pretrain/checkpoints/last.ckpt, or its run folder",
    )
    export.add_argument("out", type=os.path.expanduser, help="sorter checkpoint to write, e.g. sorter.pt")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the sorter checkpoint OUT holds (never a file of another kind)",
    )
    export.set_defaults(handler=command_export)


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments end in one line that says where the options are listed, not in the usage
    block (its subcommands' parsers are of this class too).  Flags are never abbreviated
    (``--fold 3`` is not ``--folds 3``), as keys of a ``--config`` YAML are not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {shortened_values(message)} (options: {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse, but an unknown flag is named by the (sub)command that was given, with the
        closest flag it has: ``sodeep pretrain: error: unrecognized arguments: --stepz (did you
        mean --steps?) (options: sodeep pretrain --help)``.

        A flag may be spelled with underscores, as its config field (``--max_epochs=5`` is
        ``--max-epochs=5``): a W&B sweep passes each parameter as ``--name=value``, and its
        parameters are named as in the YAML configs."""
        words = self._spelled_for_argparse(sys.argv[1:] if args is None else list(args))
        arguments, unknown = self.parse_known_args(words, namespace)
        if unknown:
            command = self._innermost(words)
            flags = [flag for action in command._actions for flag in action.option_strings]
            after_options = set(words[words.index("--") + 1 :]) if "--" in words else set()
            hints = []
            for word in unknown:
                if word in after_options and word.split("=")[0] in flags:
                    hints.append(f"{word} (after --, which ends the options)")
                    continue
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1) if word.startswith("-") else []
                hints.append(word + (f" (did you mean {close[0]}?)" if close else ""))
            command.error(f"unrecognized arguments: {' '.join(hints)}")
        return arguments

    def _spelled_for_argparse(self, words: list[str]) -> list[str]:
        """``words`` as a W&B sweep agent writes them, in the spelling argparse reads; nothing
        after ``--`` is touched.  In the (sub)command each word was given to:

        - ``--a_b[=value]`` that names no flag but whose ``--a-b`` does is ``--a-b[=value]``;
        - ``--flag=True`` / ``--flag=False`` of a switch is ``--flag`` / ``--no-flag`` (or nothing);
        - ``--flag=['x', 'y']`` (a list parameter, written with Python's ``str``) of a flag that
          takes several values is ``--flag x y``.
        """
        spelled: list[str] = []
        for index, word in enumerate(words):
            if word == "--":
                return spelled + words[index:]
            name, equals, value = word.partition("=")
            if not name.startswith("--"):
                spelled.append(word)
                continue
            actions = {
                flag: action for action in self._innermost(words[:index])._actions for flag in action.option_strings
            }
            hyphenated = "--" + name[2:].replace("_", "-")
            if name not in actions and hyphenated in actions:
                name = hyphenated
            action = actions.get(name)
            spelled += _sweep_spelling(name, value, action) if equals and action else [name + equals + value]
        return spelled

    def _innermost(self, words: list[str]) -> argparse.ArgumentParser:
        """The parser of the deepest subcommand named in ``words``."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for index, word in enumerate(words):
                    if word in action.choices:
                        chosen = action.choices[word]
                        inner = getattr(chosen, "_innermost", None)
                        return inner(words[index + 1 :]) if inner else chosen
        return self


def _sweep_spelling(flag: str, value: str, action: argparse.Action) -> list[str]:
    """``flag=value`` as words argparse reads: a switch given ``True``/``False``, or a flag of
    several values (any number, or a fixed number above one) given a Python list literal, is
    spelled out; anything else is left as it is."""
    if action.nargs == 0 and value in ("True", "False"):  # store_true or --x/--no-x
        negative = next((option for option in action.option_strings if option.startswith("--no-")), None)
        if value == "True":
            return [flag]
        return [negative] if negative else []
    several = action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)
    # (A number written with an underscore, 1_0, is left for the flag's type to refuse.)
    underscored = re.search(r"\d_\d", re.sub(r"'[^']*'|\"[^\"]*\"", "", value))
    if several and value.startswith("[") and value.endswith("]") and not underscored:
        items = python_literal(value)
        if isinstance(items, list) and items and all(isinstance(item, (str, int, float)) for item in items):
            return [flag, *map(str, items)]
    return [f"{flag}={value}"]


def build_parser() -> argparse.ArgumentParser:
    from sodeep import __version__

    parser = OneLineErrorParser(prog="sodeep", description="Differentiable sorting with learned sorters.")
    parser.add_argument("--version", action="version", version=f"sodeep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_pretrain_parser(commands)
    add_evaluate_parser(commands)
    add_export_parser(commands)
    from sodeep.benchmark.cli import add_bench_parser
    from sodeep.brainage.cli import add_brainage_parser
    from sodeep.sweeps.cli import add_sweep_parser

    add_brainage_parser(commands)
    add_bench_parser(commands)
    add_sweep_parser(commands)
    return parser


#: Quoted text in a message, the user's own names and values: quotes that open and close a word,
#: not an apostrophe (``the folds' subjects``, ``the run's folder``).
QUOTED = r"""(?<!\w)'[^']*'(?!\w)|(?<!\w)"[^"]*"(?!\w)"""


#: Characters of a quoted value, and of a ``[...]`` list (such as the known settings a message
#: names), that a one-line message shows whole.
SHOWN_VALUE, SHOWN_LIST = 200, 1000


def shortened_values(message: str) -> str:
    """``message`` with each quoted value longer than :data:`SHOWN_VALUE` characters, and each
    list longer than :data:`SHOWN_LIST`, cut to its start and its length, so that a line stays a line.

    Example:
        >>> shortened_values(f"wandb must be offline, got {'x' * 300!r}")
        "wandb must be offline, got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' (300 characters)"
    """

    def cut(match: re.Match) -> str:
        value = match.group(0)
        if len(value) <= (SHOWN_LIST if value.startswith("[") else SHOWN_VALUE):
            return value
        return f"{value[:61]}...{value[-1]} ({len(value) - 2:,} characters)"

    return re.sub(rf"{QUOTED}|\[[^\[\]]*\]", cut, message)


def in_flag_words(message: str, parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> str:
    """``message`` with the settings it names as config fields (``batch_size``, ``init_from``,
    ``patience >= 1``) spelled as the flags a command-line user typed (``--batch-size``,
    ``--init-from``, ``--patience >= 1``).  A name with an underscore is spelled anew wherever it
    stands; a single word (``steps``, also a plain word) only where a condition on it follows
    (``must be``, ``must not``, ``>=``, ``<=``, ``>``, ``<``) or a change of its value
    (``seed: 0 -> 3``), and only for a flag of the command ``argv`` runs.
    A flag that "must be None or ..." must be ``'none'`` or ..., as the command line spells it.
    Quoted text, the user's own names and values, is left as it is."""
    flags = _flag_names(parser)
    compound = sorted((name for name in flags if "_" in name), key=len, reverse=True)
    single = sorted(
        (name for name in _flag_names(_command_parser(parser, argv)) if "_" not in name), key=len, reverse=True
    )
    patterns = [
        re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, names)) + r")" + after)
        for names, after in (
            # Not a file's name: ``batch_size.csv`` (a period that ends the sentence is not one).
            (compound, r"(?![\w/=]|\.\w)"),
            # A value may be a list: ``shape: [16, 16, 16] -> [16, 16, 18]``, or one of quoted names.
            (single, r"(?= (?:must be|must not|>=|<=|>|<) |: (?:$|\[\Z|(?:\[[^\]]*\]|[^,;()\[])*? -> ))"),
        )
        if names
    ]

    def spelled(part: str) -> str:
        for pattern in patterns:
            part = pattern.sub(lambda match: flags[match.group(1)], part)
        # Python's None is the word 'none' on the command line (``--max-minutes none``).
        return re.sub(r"(--[\w-]+ must be )None\b", r"\1'none'", part)

    # Quoted text is the user's data (a column, a pattern, a value): only the words outside quotes change.
    parts = re.split(rf"({QUOTED})", message)
    return "".join(part if index % 2 else spelled(part) for index, part in enumerate(parts))


def assignments_as_flags(message: str, parser: argparse.ArgumentParser, typed: Sequence[str] = ()) -> str:
    """``message`` with the keyword arguments its advice gives a Python caller (``overwrite=True``,
    ``folds=3``, ``split='stratified'``, ``seeds=[0, 1]``, ``out=`` alone for the setting itself)
    spelled as the command line takes them (``--overwrite``, ``--folds 3``, ``--split stratified``,
    ``--seeds 0 1``, ``--out``), for every flag of ``parser`` and its subcommands.  Quoted text and
    the words the user ``typed`` (a folder named ``seed=3``), the user's own names and values, are
    left as they are, except a quoted value assigned to a flag (also in a list), which is quoted
    for a shell.

    Example:
        >>> assignments_as_flags("use folds=3 or split='stratified'; run with overwrite=True", build_parser())
        'use --folds 3 or --split stratified; run with --overwrite'
        >>> assignments_as_flags("with losses=['l1', 'l1+spearman'] and seeds=[0, 1]", build_parser())
        'with --losses l1 l1+spearman and --seeds 0 1'
    """
    flags = _flag_names(parser)
    names = sorted(flags, key=len, reverse=True)
    # The values the user typed that hold a '=' (a path, a baseline item): left alone, as quoted text is.
    values = {word.split("=", 1)[1] if word.startswith("--") else word for word in typed if "=" in word}
    own = "|".join(rf"(?<![\w./-]){re.escape(value)}" for value in sorted(values, key=len, reverse=True) if value)
    assignment = re.compile(
        rf"({QUOTED}{'|' + own if own else ''})"  # left alone
        r"|(?<![\w./-])(" + "|".join(map(re.escape, names)) + rf")="
        rf"(True\b|{QUOTED}|\[(?:{QUOTED}|[^\[\]'\"])*\]|[^\s,;:()\[\]]*)"
    )

    def spelled(match: re.Match) -> str:
        if match.group(1):
            return match.group(1)
        flag, value = flags[match.group(2)], match.group(3)
        end = "." if value.endswith(".") else ""  # the sentence's full stop, not the value's
        value = value.removesuffix(end)
        if value in ("True", ""):
            return flag + end
        if not value.startswith("["):
            return f"{flag} {_shell_word(value)}{end}"
        try:
            items = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return match.group(0)
        if not items:  # (an empty list is no flag's value)
            return match.group(0)
        return " ".join([flag, *(shlex.quote(item) if isinstance(item, str) else str(item) for item in items)]) + end

    return assignment.sub(spelled, message)


def _shell_word(value: str) -> str:
    """A Python literal as a shell word: a quoted string quoted for a shell, anything else as it is."""
    quoted = len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]
    return shlex.quote(value[1:-1]) if quoted else value


def _flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The settings that ``parser`` and its subcommands take as flags, each with its flag: its
    name with dashes (``batch_size``: ``--batch-size``), or the flag of a setting that takes a
    value under another name (``training_table``: ``--training-csv``)."""
    flags, parsers = {}, [parser]
    while parsers:
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
                continue
            dashed = f"--{action.dest.replace('_', '-')}"
            if dashed in action.option_strings:
                flags[action.dest] = dashed
            elif action.nargs != 0 and action.option_strings[-1:] and action.option_strings[-1].startswith("--"):
                flags.setdefault(action.dest, action.option_strings[-1])
    return flags


def _command_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The (sub)command parser that ``argv`` runs (``brainage tabular``: that one's alone)."""
    words = iter(argv)
    while True:
        commands = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        word = next((w for w in words if not w.startswith("-")), None) if commands else None
        if commands is None or word not in commands.choices:
            return parser
        parser = commands.choices[word]


def without_register_hint(message: str) -> str:
    """``message`` less its advice to register a sorter class in Python, which the command line
    cannot follow (it knows the built-in sorters only)."""
    start = message.find(REGISTER_HINT_START)
    end = message.find(REGISTER_HINT_END, start)  # the hint's own end: a name in it may hold a ")"
    return message if start < 0 or end < 0 else message[:start] + message[end + len(REGISTER_HINT_END) :]


def main(argv: list[str] | None = None, *, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command.  Bad input (a missing, unreadable or foreign file, an invalid value;
    ``ValueError`` and ``OSError``, of which ``CheckpointError`` is one) ends with one line on stderr
    and exit status 2, as argparse does for bad flags; a W&B server that does not take an online
    run, with one line and exit status 1; set ``SODEEP_TRACEBACK=1`` for the traceback.
    ``parser``: :func:`build_parser`'s, where the caller built it already."""
    parser = build_parser() if parser is None else parser
    console = argv is None  # the console script, or python -m sodeep: this process ends with the command
    argv = sys.argv[1:] if argv is None else list(argv)
    empty = empty_argument_problem(argv)
    if empty:  # before argparse, which would name an empty word as an unknown argument
        nested = argv[:1] in (["brainage"], ["sweep"]) and len(argv) > 1 and not argv[1].startswith("-")
        named = " ".join(["sodeep", *argv[: 2 if nested else 1]]) if argv and not argv[0].startswith("-") else "sodeep"
        parser.exit(2, f"{named}: error: {empty}\n")
    arguments = parser.parse_args(argv)
    arguments.console = console
    if console:
        # A log handler that cannot write (a full disk, a size limit: W&B's debug logs first)
        # would print a traceback per record; the command's own error says what happened.
        logging.raiseExceptions = False
    arguments.argv = argv  # the command's words, as a command that records or repeats itself spells them
    show_warning = warnings.showwarning

    def as_typed(message: str) -> str:
        # A sweep file's parameters are its own, whatever their names: a sweep command's words
        # become its own flags only.
        flags_of = _command_parser(parser, argv) if arguments.command == "sweep" else parser
        return assignments_as_flags(message, flags_of, argv)

    def show_setup_warnings_in_one_line(message, category, filename, lineno, file=None, line=None):
        if category.__name__ == "SetupWarning":  # sodeep.runs.SetupWarning, without importing Lightning
            print(f"{name}: warning: {as_typed(str(message))}", file=sys.stderr, flush=True)
        else:
            show_warning(message, category, filename, lineno, file, line)

    # `sodeep brainage tabular`, as argparse names the command in its own errors.
    name = " ".join(
        ["sodeep", arguments.command]
        + [getattr(arguments, task) for task in ("brainage_command", "sweep_command") if getattr(arguments, task, None)]
    )
    warnings.showwarning = show_setup_warnings_in_one_line
    spelling = advice_spelling.set(as_typed)  # the notes of the command's data
    try:
        status = arguments.handler(arguments)
        _ignore_stop_signals_from_now_on(arguments)
        return status
    except BrokenPipeError:  # the reader of the output went away (`sodeep ... | head`)
        from sodeep.sweeps.cli import quiet_broken_pipe

        return quiet_broken_pipe(name)
    except (ValueError, OSError) as error:  # bad input, missing or unreadable files
        if os.environ.get("SODEEP_TRACEBACK"):
            raise
        written_in = getattr(arguments, "out", None) or getattr(arguments, "root", None)
        message = " ".join((os_error_line(error, written_in) if isinstance(error, OSError) else str(error)).split())
        message = without_register_hint(message)  # a class of one's own is registered in Python only
        if not isinstance(error, OSError):  # an OSError names files, not settings
            message = as_typed(message)  # advice a Python caller reads as keyword arguments
        if not isinstance(error, OSError) and not getattr(arguments, "config", None) and arguments.command != "sweep":
            message = in_flag_words(message, parser, argv)  # a YAML config or sweep file names settings as fields
        parser.exit(2, f"{name}: error: {shortened_values(message)}\n")
    except KeyboardInterrupt:  # before a run could save anything: nothing to resume
        _ignore_stop_signals_from_now_on(arguments)
        lightning = sys.modules.get("lightning.pytorch.utilities.rank_zero")
        if lightning is not None and getattr(lightning.rank_zero_only, "rank", 0) != 0:
            parser.exit(INTERRUPTED)  # a distributed run's other processes: rank 0 says it once
        parser.exit(
            INTERRUPTED,
            f"{name}: interrupted before this command saved anything; run the same command again\n",
        )
    except RunInterrupted as interrupted:
        from sodeep.runs import global_rank  # Lightning is loaded: only a training run gets here

        _ignore_stop_signals_from_now_on(arguments)
        if global_rank() != 0:  # a distributed run's other processes: rank 0 says it once
            parser.exit(INTERRUPTED)
        # --overwrite and --resume in any spelling (--overwrite=True, as W&B sweeps write them) give way to --resume.
        again = [word for word in argv if word.partition("=")[0] not in ("--overwrite", "--resume")] + ["--resume"]
        parser.exit(INTERRUPTED, f"{interrupted.summary}; resume with: {typed_program()} {shlex.join(again)}\n")
    except Exception as error:  # last: the clauses above take theirs first
        wandb_errors = getattr(sys.modules.get("wandb"), "errors", None)
        if wandb_errors is None or not isinstance(error, wandb_errors.CommError) or os.environ.get("SODEEP_TRACEBACK"):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        parser.exit(
            1,
            f"{name}: error: W&B's server did not take the run ({reason}); check the network, the W&B login and "
            "the entity and project, or run it again with --wandb offline (`wandb sync` sends an offline run later)\n",
        )
    finally:
        warnings.showwarning = show_warning
        advice_spelling.reset(spelling)
        _release_process_group()


def typed_program() -> str:
    """How this process was started, for a command to run again: the interpreter and module as
    typed (``python3 -m sodeep``, ``/opt/venv/bin/python -m sodeep.cli``), or ``sodeep`` (the
    console script, and a Python caller of :func:`main`)."""
    typed = list(getattr(sys, "orig_argv", []))
    for index, word in enumerate(typed[:-1]):
        if word == "-m" and typed[index + 1].split(".")[0] == "sodeep":
            return shlex.join(typed[: index + 2])  # the interpreter as typed: a path too, which PATH may not give
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    by_module = script is not None and script.name == "__main__.py" and script.parent.name == "sodeep"
    return "python -m sodeep" if by_module else "sodeep"


def empty_argument_problem(argv: list[str]) -> str | None:
    """What is wrong with an empty (or blank) word of ``argv``, or ``None``: argparse takes
    ``--out ""`` as given, while the commands read an empty value as one left out, so an empty
    path or name would silently mean the default."""
    for index, word in enumerate(argv):
        flag, equals, value = word.partition("=")
        if word.startswith("--") and equals and not value.strip():
            return f"{flag} is given an empty value; give a value or leave the flag out"
        if not word.strip():
            before = argv[index - 1] if index else ""
            if before.startswith("-"):
                return f"{before} is followed by an empty argument; give a value or leave it out"
            return f"an empty argument{f' after {before}' if before else ''}; give a value or leave it out"
    return None


def _ignore_stop_signals_from_now_on(arguments: argparse.Namespace) -> None:
    """The command has ended, its work saved or interrupted: from now on Ctrl-C and SIGTERM are
    ignored, so that the process ends with the command's status after the interpreter shuts down
    W&B's service and Lightning's threads (a second or two), rather than with a
    ``KeyboardInterrupt`` or killed by the signal (W&B's run-stop watcher, interrupted in its
    start, signals the main thread with SIGINT).  Ignored (``SIG_IGN``), not handled in Python:
    Python's shutdown resets its own handlers to the default.  Only when the command is the
    process's (``arguments.console``), not when :func:`main` is called from Python."""
    if getattr(arguments, "console", False) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _release_process_group() -> None:
    """Destroy a distributed command's process group before the interpreter exits (see
    :func:`sodeep.runs.release_process_group`), without loading torch for a command that did not."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
