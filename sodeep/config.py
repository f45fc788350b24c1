"""Run configurations: one dataclass per command holds its defaults, read alike by the console
script, YAML files and the Python API.

Example:
    >>> config = config_from_mapping(PretrainConfig, {"steps": 10, "lengths": "2-8"}, "example")
    >>> config.steps, config.length_list()
    (10, [2, 3, 4, 5, 6, 7, 8])
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import contextvars
import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any, TypeVar

from sodeep.checks import python_scalar

ConfigT = TypeVar("ConfigT")

#: The largest float32, beyond which a learning rate overflows the optimizer's float32 step.
FLOAT32_MAX = 3.4028234663852886e38


def lengths_text(lengths: Sequence[int]) -> str:
    """The one spelling of a list of lengths: ``"2-256"`` for consecutive lengths, else ``"8,100"``
    (order and repeats kept as given).

    Example:
        >>> lengths_text([2, 3, 4]), lengths_text([8, 100, 100])
        ('2-4', '8,100,100')
    """
    lengths = list(lengths)
    if len(lengths) > 1 and lengths == list(range(lengths[0], lengths[-1] + 1)):
        return f"{lengths[0]}-{lengths[-1]}"
    return ",".join(str(n) for n in lengths)


#: The most lengths a range may hold (``"2-1000000"``): far beyond any sorter's rows.
MAX_RANGE_LENGTHS = 1_000_000


def lengths_summary(lengths: Sequence[int]) -> str:
    """Lengths for a message: runs of consecutive lengths as ranges.

    Example:
        >>> lengths_summary([2, 3, 4, 5, 7, 9, 10])
        '2-5,7,9-10'
    """
    runs: list[list[int]] = []
    for n in lengths:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(f"{low}-{high}" if high > low else str(low) for low, high in runs)


def parse_lengths(value: Any) -> list[int]:
    """``"2-256"`` -> [2, ..., 256]; ``"100"``, ``"8,100"``, ``[8, 100]`` (or a ``range``, a NumPy
    array) -> those lengths (each >= 2), a length given twice once.

    Example:
        >>> parse_lengths("2-4"), parse_lengths("8,100"), parse_lengths("5,5,3")
        ([2, 3, 4], [8, 100], [5, 3])
    """
    value = python_scalar(value)
    is_range = isinstance(value, str) and "-" in value.strip()[1:]
    texts = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
    if any(isinstance(text, str) and "_" in text for text in texts):  # int() reads '2_8' as 28
        raise ValueError(f"lengths must be ints, a list like '8,100' or a range like '2-256', got {value!r}")
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, Integral):
            lengths = [int(value)]
        elif isinstance(value, (list, tuple, range)) or type(value).__module__ == "numpy":  # NumPy arrays too
            items = list(value.tolist() if hasattr(value, "tolist") else value)
            if any(isinstance(item, bool) or not isinstance(item, (Integral, str)) for item in items):
                raise ValueError
            lengths = [int(item) for item in items]
        elif is_range:
            low, high = (int(part) for part in value.strip().split("-", 1))
            lengths = range(low, high + 1)
        else:
            if "," in str(value) and any(not part.strip() for part in str(value).split(",")):
                raise ValueError  # '5,,6' or '5,': a missing length
            lengths = [int(part) for part in str(value).replace(",", " ").split()]
    except ValueError as error:
        raise ValueError(f"lengths must be ints, a list like '8,100' or a range like '2-256', got {value!r}") from error
    if is_range and not lengths:
        raise ValueError(
            f"lengths must not be an empty range, got {value!r}: give the shortest length first, e.g. '2-256'"
        )
    if len(lengths) > MAX_RANGE_LENGTHS:
        raise ValueError(
            f"lengths must not be a range of more than {MAX_RANGE_LENGTHS:,} lengths, got {value!r}, "
            f"{len(lengths):,} of them: no sorter ranks rows that long"
        )
    lengths = list(dict.fromkeys(lengths))  # a repeated length would repeat its rows in a table
    if not lengths or min(lengths) < 2:
        raise ValueError(f"lengths must be ints >= 2 (a ranking needs two values), got {value!r}")
    return lengths


def parse_with_quick(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, quick: dict[str, Any]
) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, ``quick`` replaces the defaults of the flags not typed
    (a flag given beside ``--quick`` keeps its value).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = parser.add_argument("--quick", action="store_true")
        >>> _ = parser.add_argument("--draws", type=int, default=500)
        >>> _ = parser.add_argument("--seed", type=int, default=0)
        >>> vars(parse_with_quick(parser, ["--quick", "--seed", "3"], {"draws": 30, "seed": 1}))
        {'quick': True, 'draws': 30, 'seed': 3}
    """
    arguments = parser.parse_args(argv)
    if arguments.quick:
        parser.set_defaults(**quick)
        arguments = parser.parse_args(argv)
    return arguments


def number_list(
    kind: type[int] | type[float], minimum: float | None = None, *, above: bool = False
) -> Callable[[str], list[Any]]:
    """An argparse ``type`` for numbers separated by commas or spaces (``"32,256"``), each of
    ``kind`` and at least ``minimum`` (above it with ``above``); anything else is an
    ``ArgumentTypeError`` that shows the form or the bound.

    Example:
        >>> number_list(int)("32,256"), number_list(float)("1e-4 0.1")
        ([32, 256], [0.0001, 0.1])
        >>> number_list(int, 2)("1,5")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: each must be >= 2, got '1,5'
    """

    def parse(text: str) -> list[Any]:
        try:
            # An empty entry ("64,,128", "5,") is a slip, refused rather than dropped.
            values = [without_underscores(kind)(part) for part in re.split(r"\s*,\s*|\s+", str(text).strip())]
        except ValueError:
            values = []
        if not values or not all(math.isfinite(value) for value in values):
            example = "32,256" if kind is int else "0.01,0.1"
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__}s separated by commas, e.g. {example}, got {text!r}"
            )
        if minimum is not None and not all(_within(value, minimum, above) for value in values):
            raise argparse.ArgumentTypeError(f"each must be {_bound(minimum, above)}, got {text!r}")
        return values

    parse.__name__ = f"{kind.__name__} list"
    return parse


class UnderscoreInNumber(argparse.ArgumentTypeError, ValueError):
    """A number written with an underscore, which Python's parsing would drop."""


def without_underscores(kind: type[int] | type[float]) -> Callable[[str], Any]:
    """``kind`` (``int`` or ``float``) for text, refusing the underscores Python's parsing drops:
    ``"2_8"`` is a ``ValueError``, not 28 (a typo for the range ``2-8``?).

    Example:
        >>> without_underscores(int)("28"), without_underscores(float)("0.5")
        (28, 0.5)
    """

    def parse(text: Any) -> Any:
        if isinstance(text, str) and "_" in text:
            raise UnderscoreInNumber(f"{text!r} holds an underscore: write numbers without one")
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


#: argparse types for a plain ``int`` or ``float`` flag (:func:`without_underscores`).
integer, real = without_underscores(int), without_underscores(float)


def number_at_least(kind: type[int] | type[float], minimum: float, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` for one number of ``kind``, at least ``minimum`` (above it with
    ``above``), finite.

    Example:
        >>> number_at_least(int, 1)("3"), number_at_least(float, 0, above=True)("1e-6")
        (3, 1e-06)
    """

    def parse(text: str) -> Any:
        try:
            value = without_underscores(kind)(text)
        except UnderscoreInNumber:
            raise
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__} {_bound(minimum, above)}, got {text!r}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number {_bound(minimum, above)}, got {text!r}")
        if not _within(value, minimum, above):
            raise argparse.ArgumentTypeError(f"must be {_bound(minimum, above)}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _within(value: float, minimum: float, above: bool) -> bool:
    return value > minimum if above else value >= minimum


def _bound(minimum: float, above: bool) -> str:
    """``">= 1"`` or ``"> 0"``."""
    return f"{'>' if above else '>='} {minimum:g}"


def parse_json_object(value: Any, name: str) -> dict[str, Any]:
    """A mapping, or a JSON object string, as a dict (``name``: where it came from, for errors).

    A Python dict literal of plain values is read too: W&B's sweep agent writes a nested
    parameter as ``{'band': 8, 'normalize': True}``.

    Example:
        >>> parse_json_object('{"band": 8}', "--sorter"), parse_json_object("{'band': 8, 'x': True}", "--sorter")
        ({'band': 8}, {'band': 8, 'x': True})
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            value = python_literal(value)
            if value is None:
                raise ValueError(f"{name} must be a JSON object, e.g. '{{\"band\": 8}}': {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, e.g. '{{\"band\": 8}}', got {value!r}")
    return dict(value)


def python_literal(text: str) -> Any:
    """The value of a Python literal of plain values (``"{'band': 8}"``, ``"['l1', 'mse']"``), as
    W&B's sweep agent writes parameters with ``str``; ``None`` for text that is not one."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


#: What a run does, not a setting of it: given on the command line or as an argument, never in a
#: config file (a run's settings must say the same whether it starts, resumes or starts again).
RUN_ACTIONS = ("resume", "overwrite")


def run_action_hint(key: Any) -> str:
    """`` (resume is what a run does, not a setting: give resume=True)`` (``--resume`` on the command
    line) for a config file's key that names one of :data:`RUN_ACTIONS`, else ``""``."""
    if key not in RUN_ACTIONS:
        return ""
    return f" ({key} is what a run does, not a setting: give {key}=True, or leave the key out)"


def close_names(name: str, known: Sequence[str], n: int = 1) -> list[str]:
    """Up to ``n`` of the ``known`` names that ``name`` was probably meant to be, case aside.

    Example:
        >>> close_names("STEPS", ["steps", "seed"]), close_names("stpes", ["steps", "seed"])
        (['steps'], ['steps'])
    """
    folded: dict[str, str] = {}
    for candidate in known:
        folded.setdefault(str(candidate).lower(), candidate)
    return [folded[match] for match in difflib.get_close_matches(str(name).lower(), list(folded), n=n)]


def unknown_keys_message(unknown: list[str], known: list[str], where: str) -> str:
    """``unknown key 'stpes' in X (did you mean 'steps'?); known: [...]``."""
    described = []
    for key in unknown:
        match = close_names(str(key), known)
        hint = run_action_hint(key) or (f" (did you mean {match[0]!r}?)" if match else "")
        described.append(repr(key) + hint)
    noun = "key" if len(unknown) == 1 else "keys"
    return f"unknown {noun} {', '.join(described)} in {where}; known: {known}"


def config_from_mapping(cls: type[ConfigT], mapping: dict[str, Any], source: str) -> ConfigT:
    """Build the dataclass ``cls`` from ``mapping``, refusing keys it does not have (with close
    matches), then run its ``validate()`` if it has one."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{source} must hold a mapping of settings, got a {type(mapping).__name__}")
    known = [item.name for item in dataclasses.fields(cls)]
    unknown = sorted(set(mapping) - set(known), key=str)
    if unknown:
        raise ValueError(unknown_keys_message(unknown, known, source))
    config = cls(**mapping)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


class _RepeatedKey(ValueError):
    """A YAML mapping gives one key twice (YAML would keep the last silently), or a value YAML
    reads as something else than it looks (``010`` as the octal 8)."""


def _refusing_odd_integers(loader: Any, node: Any) -> int:
    """An integer as ``yaml.SafeLoader`` reads it, but a leading zero (``010``: YAML 1.1's octal 8),
    base 60 (``1:30``: 90) and underscores (``2_8``: 28) are refused, naming the line."""
    text = str(loader.construct_scalar(node))
    line = node.start_mark.line + 1
    value = loader.construct_yaml_int(node)
    digits = text.replace("_", "")
    if re.fullmatch(r"[-+]?0[0-7]+", digits):
        decimal = ("-" if digits.startswith("-") else "") + (digits.lstrip("+-").lstrip("0") or "0")
        raise _RepeatedKey(f"line {line}: YAML reads {text} as the octal number {value}: write {decimal}")
    if ":" in text:
        raise _RepeatedKey(
            f"line {line}: YAML reads {text} as {value} (base 60): write {value}, or quote it if it is text"
        )
    if re.match(r"[-+]?0[xXbB]", text):  # as a flag, 0x10 is refused
        base = "hexadecimal" if text.lstrip("+-")[1] in "xX" else "binary"
        raise _RepeatedKey(f"line {line}: YAML reads {text} as the {base} number {value}: write {value}")
    # 2_8 (for 2-8, a range of lengths?) reads as 28, 2_256 as 2256.
    if "_" in text:
        low, _, high = text.partition("_")
        ascending = re.fullmatch(r"[1-9]\d*_[1-9]\d*", text) and int(low) < int(high)
        as_range = f", or {low}-{high} for a range of lengths" if ascending else ""
        raise _RepeatedKey(
            f"line {line}: YAML reads {text} as {value}, leaving out the underscores: write {value}{as_range}"
        )
    return value


def _refusing_odd_floats(loader: Any, node: Any) -> float:
    """A float as ``yaml.SafeLoader`` reads it, but underscores (``1_0.5``: 10.5), which a flag
    refuses, and base 60 (``1:30.5``: 90.5) are refused, naming the line."""
    text = str(loader.construct_scalar(node))
    value = loader.construct_yaml_float(node)
    if ":" in text:
        raise _RepeatedKey(
            f"line {node.start_mark.line + 1}: YAML reads {text} as {value} (base 60): write {value}, or quote it "
            "if it is text"
        )
    if "_" in text:
        raise _RepeatedKey(
            f"line {node.start_mark.line + 1}: YAML reads {text} as {value}, leaving out the underscores: write {value}"
        )
    return value


def _refusing_repeated_keys(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
    """The YAML mapping of ``node``, as ``yaml.SafeLoader`` builds it, but a key given twice is
    a :class:`_RepeatedKey` naming its lines."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys given here may override those
            continue
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if isinstance(key, (list, dict, set)):
            raise _RepeatedKey(f"line {line} has a {type(key).__name__} as a key; a key is a setting's name")
        # max-epochs and max_epochs name one setting.
        name = key.replace("-", "_") if isinstance(key, str) else key
        if name in seen:
            raise _RepeatedKey(f"{key!r} is given twice (lines {seen[name]} and {line}); keep one")
        seen[name] = line
    return loader.construct_mapping(node, deep=deep)


def read_yaml_mapping(path: str | os.PathLike, kind: str = "config") -> dict[str, Any]:
    """The mapping of settings in a YAML file (an empty file is an empty mapping); a key given
    twice in any mapping of it is refused, where YAML would keep the last one silently.  ``kind``
    names the file in the message for a missing one (``no sweep file at ...``)."""
    import yaml

    class RefusingRepeatedKeys(yaml.SafeLoader):
        pass

    RefusingRepeatedKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _refusing_repeated_keys)
    RefusingRepeatedKeys.add_constructor("tag:yaml.org,2002:int", _refusing_odd_integers)
    RefusingRepeatedKeys.add_constructor("tag:yaml.org,2002:float", _refusing_odd_floats)
    path = Path(path)
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=RefusingRepeatedKeys)
    except _RepeatedKey as error:
        raise ValueError(f"{path}: {error}") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"no {kind} file at {path}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text (YAML) file in UTF-8: save it as UTF-8 text") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder; give the YAML file of settings in it") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    loaded = {} if loaded is None else loaded
    if isinstance(loaded, str) and re.match(r"[\w-]+:\S", loaded):  # "steps:3": YAML's key needs ": "
        key, _, value = loaded.partition(":")
        first = value.split()[0][:20]
        raise ValueError(
            f"{path} must hold a mapping of settings, got the text {loaded[:40]!r}: put a space after each setting's "
            f"colon ({key}: {first}, not {key}:{first})"
        )
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of settings, got a {type(loaded).__name__}")
    return loaded


#: Which of the settings being checked came from a YAML file (``True``: all, ``False``: none):
#: only for those does a refused value's message add what YAML may have meant (:func:`yaml_reading`).
_CHECKING_YAML_SETTINGS: contextvars.ContextVar[bool | frozenset[str]] = contextvars.ContextVar(
    "checking_yaml_settings", default=False
)


@contextlib.contextmanager
def checking_yaml_settings(from_a_file: bool | Collection[str] = True) -> Iterator[None]:
    """Within the block, settings are checked as read from a YAML file: all of them (``True``),
    none (``False``), or those named in ``from_a_file`` (the others came from flags or Python)."""
    token = _CHECKING_YAML_SETTINGS.set(from_a_file if isinstance(from_a_file, bool) else frozenset(from_a_file))
    try:
        yield
    finally:
        _CHECKING_YAML_SETTINGS.reset(token)


def yaml_reading(value: Any, wanted: str = "text", name: str | None = None) -> str:
    """What a YAML file may have meant by ``value``, as the end of a message (or ``""``) about a
    setting (``name``) that takes ``wanted`` (``"text"`` or ``"number"``): YAML reads ``off``,
    ``no``, ``yes`` and ``on`` as booleans, ``~`` and an empty value as ``None``, and a number in
    e-notation without a dot (``1e1``) as text.  ``""`` for a value that came from flags or
    Python: outside :func:`checking_yaml_settings`, or where it lists the file's settings, for
    a ``name`` it does not list (or none).

    Example:
        >>> with checking_yaml_settings():
        ...     yaml_reading(False), yaml_reading(True, "number"), yaml_reading("1e1"), yaml_reading(3)
        ('; YAML reads yes, no, on and off as booleans: put a word meant as text in quotes', '; YAML reads yes, no, on, off, true and false as booleans: write a number', '; YAML reads 1e1 as text: write 10', '')
        >>> yaml_reading("1e1")
        ''
    """
    from_the_file = _CHECKING_YAML_SETTINGS.get()
    if from_the_file is False or (from_the_file is not True and (name is None or name not in from_the_file)):
        return ""
    if value is None:
        return "; YAML reads ~, null and an empty value as nothing: give one, or leave the key out for the default"
    if isinstance(value, bool):
        if wanted == "number":
            return "; YAML reads yes, no, on, off, true and false as booleans: write a number"
        return "; YAML reads yes, no, on and off as booleans: put a word meant as text in quotes"
    if isinstance(value, str):
        if re.fullmatch(r"[-+]?0o[0-7]+", value.strip()):  # YAML 1.2's octal, text to YAML 1.1
            return f"; YAML reads {value.strip()} as text: write {int(value.strip(), 8)}"
        try:
            number = float(value)
        except ValueError:
            return ""
        spelled = yaml_number(number) if math.isfinite(number) else None
        if spelled is not None and value.strip() != spelled:
            return f"; YAML reads {value.strip()} as text: write {spelled}"
        if spelled is not None and wanted == "number":  # "3": a number in quotes
            return f"; YAML reads a number in quotes as text: write {spelled} without quotes"
    return ""


def yaml_number(number: float) -> str:
    """``number`` spelled so that YAML reads it as a number: whole numbers in digits, others with
    a dot before any exponent (YAML reads ``1e-06`` as text, ``1.0e-06`` as a number).

    Example:
        >>> yaml_number(10.0), yaml_number(1e10), yaml_number(0.001), yaml_number(1e-6), yaml_number(2.5e20)
        ('10', '10000000000', '0.001', '1.0e-06', '2.5e+20')
    """
    if number.is_integer() and abs(number) < 1e16:
        return str(int(number))
    text = f"{number:g}"
    mantissa, exponent = text.split("e") if "e" in text else (text, None)
    if exponent is not None and "." not in mantissa:
        mantissa += ".0"
    return mantissa if exponent is None else f"{mantissa}e{exponent}"


def _e_notation(value: Any) -> Any:
    """``value``, or the number of a text in e-notation (``"1e-3"``: YAML reads one without a dot
    as text), as the settings given at the top level of a config are read."""
    if isinstance(value, str) and "e" in value.lower():
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _as_float(value: Any, name: str) -> float:
    """``value`` as a float (YAML reads ``3e-3`` without a dot as a string)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        return without_underscores(float)(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (without underscores), got {value!r}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain JSON-able dict."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


#: Largest ``validation_sequences``: the held-out set lives in memory (1,024 took 0.6 GB at the
#: default lengths).
MAX_VALIDATION_SEQUENCES = 4096
#: Memory of a pretraining step per score of its batch (the batch made, the sorter's forward and
#: backward), measured on the shipped sorter at n = 256: about 540 bytes.
STEP_BYTES_PER_SCORE = 540


def physical_memory() -> int | None:
    """Bytes of memory this machine has, or ``None`` where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_step_memory(batch_size: int, longest: int) -> None:
    """Refuse a batch whose training step needs more memory than the machine has, before anything
    is written (it would end in an allocation error, or the out-of-memory killer, mid-run)."""
    available = physical_memory()
    needed = batch_size * longest * STEP_BYTES_PER_SCORE
    if available is not None and needed > available:
        raise ValueError(
            f"batch_size {batch_size} at n up to {longest} needs about {needed / 2**30:,.0f} GiB per step "
            f"(about {STEP_BYTES_PER_SCORE} bytes per score), more than this machine's {available / 2**30:,.0f} GiB; "
            f"lower batch_size (about {available // 2 // (longest * STEP_BYTES_PER_SCORE):,} takes half of it)"
        )


#: The largest seed every generator takes (NumPy's, which Lightning seeds too).
MAX_SEED = 2**32 - 1


@dataclass
class PretrainConfig:
    """Settings of a sorter pretraining (``sodeep pretrain``, :func:`sodeep.pretraining.pretrain`).

    The shipped sorter was trained with these defaults but one: ``experiments/configs/pretrain.yaml``
    sets its ``sorter`` softness to 0.1, where :class:`~sodeep.sorters.ConvSorter`'s default is 0.5
    (``sodeep pretrain --config experiments/configs/pretrain.yaml`` retrains it).
    """

    architecture: str = "conv"
    #: Keyword config of the architecture, e.g. ``{"softness": 0.5}`` (a dict or a JSON string).
    #: With ``init_from``, the entries that :func:`sodeep.load_sorter` may replace (no weight shape).
    sorter: dict[str, Any] = field(default_factory=dict)
    #: A sorter to start from instead of fresh weights: a checkpoint file (``save_sorter``,
    #: ``sodeep export``, ``pretrained/*.pt``) or a finished pretraining run folder.  Its
    #: architecture and settings are the run's (``architecture`` must name the same one);
    #: ``None`` or ``"none"``: fresh weights.
    init_from: str | None = None
    #: A range ``"2-256"`` or a list of lengths; each batch draws its n uniformly from them.
    lengths: str | list[int] = "2-256"
    #: Families of synthetic sequences to train and validate on, in this order: ``"all"`` (the 15
    #: of :data:`sodeep.synthetic.FAMILIES`), or a list of their names (or a comma-separated text).
    families: str | list[str] = "all"
    #: Chance that a training sequence gets a random positive scale and shift (``[0, 1]``): what
    #: teaches a sorter that is not affine-invariant (the original SoDeep ones) scores of any scale.
    affine_probability: float = 0.5
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    seed: int = 0
    validation_every: int = 500
    checkpoint_every: int = 100
    #: Held-out sequences per (family, n) cell, at most :data:`MAX_VALIDATION_SEQUENCES`.
    validation_sequences: int = 32
    out: str = "runs/pretrain"
    #: ``offline`` (nothing is sent), ``online`` or ``disabled``; ``None``: ``WANDB_MODE``'s where
    #: the environment sets one, else a resumed run's own, else ``offline`` (:func:`run_wandb_mode`).
    wandb: str | None = None
    #: Processes that make the training batches while the sorter trains (the same batches in the
    #: same order for any number; ``0``: the training process makes each batch in turn).  The
    #: training process then uses at most one PyTorch thread per core they leave free.
    data_workers: int = 1
    #: Lightning's ``Trainer`` settings that scale a run out (docs/scaling.md); the defaults train
    #: in one process.  Each step then takes ``batch_size`` sequences on every process:
    #: ``batch_size * devices * num_nodes`` in all.
    accelerator: str = "auto"
    #: Devices per node: a count, ``"auto"`` (all of them) or GPU indices such as ``"0,2"``.
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1

    def length_list(self) -> list[int]:
        return parse_lengths(self.lengths)

    def family_list(self) -> list[str]:
        """The names of :attr:`families`, in order."""
        from sodeep.synthetic import FAMILIES

        if self.families == "all":
            return list(FAMILIES)
        words = self.families.split(",") if isinstance(self.families, str) else self.families
        return [word.strip() if isinstance(word, str) else word for word in words]

    def _check_families(self) -> None:
        """:attr:`families` as ``"all"`` or a list of distinct known names (the 15, in their own
        order, are ``"all"``); one line naming the first problem."""
        from sodeep.synthetic import FAMILIES

        given = self.families
        names = self.family_list() if isinstance(given, (str, list, tuple)) else None
        problem = _family_names_problem(names)
        if problem:
            raise ValueError(
                f"families must be 'all' or {problem}, got {given!r}{yaml_reading(given, name='families')}"
            )
        self.families = "all" if names == list(FAMILIES) else names

    def trainer_options(self) -> dict[str, Any]:
        """The keyword arguments of Lightning's ``Trainer`` that say where the run trains."""
        return {name: getattr(self, name) for name in SCALE_OUT}

    def validate(self) -> None:
        """Raise ``ValueError`` with one line naming the first bad setting; settings given in
        another form (a path, a list of lengths) take their one spelling, so that a run started
        from Python resumes from the command line."""
        self.sorter = {key: _e_notation(value) for key, value in parse_json_object(self.sorter, "sorter").items()}
        if "architecture" in self.sorter:
            raise ValueError(
                f"sorter holds the architecture's own settings; the architecture is a setting of its own: "
                f"architecture={self.sorter['architecture']!r}, not sorter={{'architecture': ...}}"
            )
        import torch

        from sodeep.sorters import SORTERS, build_sorter

        if not isinstance(self.architecture, str):
            raise ValueError(
                f"architecture must be the name of one sorter architecture, one of {sorted(SORTERS)}, got "
                f"{self.architecture!r}{yaml_reading(self.architecture, name='architecture')}"
            )
        if self.architecture in SORTERS:  # (an unknown one is named where the sorter is built)
            # Built to check its settings up front (tiny), leaving the random state as it was.
            with torch.random.fork_rng(devices=[]):
                try:
                    build_sorter(self.architecture, **self.sorter)
                except (TypeError, ValueError) as error:
                    raise ValueError(f"sorter {json.dumps(self.sorter)}: {error}") from None
        self.lengths = lengths_text(self.length_list())
        self._check_families()
        self.affine_probability = _as_float(self.affine_probability, "affine_probability")
        if not 0.0 <= self.affine_probability <= 1.0:  # NaN too
            raise ValueError(f"affine_probability must be a number in [0, 1], got {self.affine_probability!r}")
        if isinstance(self.init_from, os.PathLike):
            self.init_from = os.fspath(self.init_from)
        if isinstance(self.init_from, str) and self.init_from.strip().lower() == "none":
            self.init_from = None  # as the brain-age commands read it: fresh weights
        if isinstance(self.init_from, str):
            self.init_from = os.path.expanduser(self.init_from)
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from.strip()):
            raise ValueError(
                f"init_from must be None or the path of a sorter checkpoint or pretraining run folder, got "
                f"{self.init_from!r}{yaml_reading(self.init_from, name='init_from')}"
            )
        if isinstance(self.out, os.PathLike):
            self.out = os.fspath(self.out)
        if isinstance(self.out, str):
            self.out = os.path.expanduser(self.out)  # ~/runs in the home folder, as Lightning and W&B read it
        if not isinstance(self.out, str) or not self.out.strip():
            raise ValueError(
                f"out must be the path of a run folder, got {self.out!r}{yaml_reading(self.out, name='out')}"
            )
        for key in ("steps", "batch_size", "validation_every", "checkpoint_every", "validation_sequences"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}{yaml_reading(value, 'number', key)}")
            setattr(self, key, int(value))  # a NumPy integer too
        if self.validation_sequences > MAX_VALIDATION_SEQUENCES:
            raise ValueError(
                f"validation_sequences must be at most {MAX_VALIDATION_SEQUENCES}, got {self.validation_sequences} "
                "(the held-out set, that many sequences per family and length, is kept in memory)"
            )
        check_step_memory(self.batch_size, max(self.length_list()))
        for key in ("warmup_steps", "seed", "data_workers"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ValueError(f"{key} must be an integer >= 0, got {value!r}{yaml_reading(value, 'number', key)}")
            setattr(self, key, int(value))  # a NumPy integer too
        if self.seed > MAX_SEED:
            raise ValueError(f"seed must be an integer in 0..{MAX_SEED} (NumPy's seeds), got {self.seed}")
        self.learning_rate = _as_float(self.learning_rate, "learning_rate")
        self.weight_decay = _as_float(self.weight_decay, "weight_decay")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= FLOAT32_MAX):
            raise ValueError(
                f"learning_rate must be a finite number > 0 (within float32's range), got {self.learning_rate!r}"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.wandb is not None and self.wandb not in WANDB_MODES:
            raise ValueError(
                f"wandb must be offline, online or disabled, got {self.wandb!r}{yaml_reading(self.wandb, name='wandb')}"
            )
        self.devices = parse_devices(self.devices)
        check_scale_out(self.accelerator, self.strategy, self.num_nodes, self.devices)
        self.num_nodes = int(self.num_nodes)  # a NumPy integer too
        self.strategy = self.strategy.strip().lower()  # DDP is ddp, as Lightning reads it
        self.accelerator = self.accelerator.strip().lower()  # CPU is cpu, as the strategy's names


def _family_names_problem(names: Any) -> str | None:
    from sodeep.synthetic import FAMILIES

    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        return "a non-empty list of names from sodeep.synthetic.FAMILIES"
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(FAMILIES), n=1)
        return f"a list of names from sodeep.synthetic.FAMILIES; {unknown[0]!r} is not one" + (
            f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(FAMILIES)})"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"a list of distinct names; {', '.join(map(repr, repeated))} is given more than once"
    return None


def parse_devices(value: Any) -> int | str:
    """Lightning's ``devices``: a count >= 1 (``4``, ``"4"``), ``"auto"``, ``-1`` (all of them) or
    device indices (``"0,2"``, ``[0, 2]``; one index is written ``"1,"``, as Lightning reads it).

    Example:
        >>> parse_devices("4"), parse_devices("auto"), parse_devices([0, 2]), parse_devices([1])
        (4, 'auto', '0,2', '1,')
    """
    if isinstance(value, (list, tuple)):
        parts = [str(item) if isinstance(item, int) and not isinstance(item, bool) else "?" for item in value]
    else:
        text = str(value).strip()
        if text == "auto" or text == "-1":
            return text if text == "auto" else -1
        if text.isdigit() and int(text) >= 1 and not isinstance(value, bool):
            return int(text)
        parts = [part.strip() for part in text.split(",")] if "," in text else ["?"]
        parts = parts[:-1] if parts and parts[-1] == "" else parts
    if not parts or not all(part.isdigit() for part in parts):
        raise ValueError(f"devices must be a count >= 1, 'auto', -1 or indices like '0,2', got {value!r}")
    return ",".join(parts) + ("," if len(parts) == 1 else "")


#: Strategies whose processes are started inside ``fit``: the code around it (the run folder, the
#: summary) would run in the launching process only.
_IN_FIT_LAUNCHERS = ("spawn", "fork", "notebook")


#: Settings of where a command trains: Lightning's ``Trainer`` arguments (docs/scaling.md).
SCALE_OUT = ("accelerator", "devices", "strategy", "num_nodes")

#: The W&B modes of every command's ``wandb`` setting (``offline``: nothing is sent).
WANDB_MODES = ("offline", "online", "disabled")

#: ``WANDB_MODE``'s values (W&B's own names ``run`` and ``dryrun`` too) as a run's W&B mode.
_WANDB_MODE_VALUES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}

#: What ``--help`` says a run's W&B mode is when no setting names one.
WANDB_DEFAULT_TEXT = "WANDB_MODE's where it is set, else on --resume the mode the run last ran with, else offline"


def run_wandb_mode(setting: str | None, out: str | os.PathLike, *, resume: bool = False) -> tuple[str, str | None]:
    """The W&B mode of a run, and what chose it where no setting did (for messages, ``None``
    otherwise): the ``setting`` (a flag, a config file's ``wandb``, ``wandb=`` from Python); else
    ``WANDB_MODE``'s (as a sweep sets it for its trials: ``offline`` or ``disabled`` there keeps
    any run local); else, for a run that resumes, the mode its ``run.json`` records; else
    ``offline``: nothing is sent, no account is needed.  A ``ValueError`` where no setting is
    given and ``WANDB_MODE`` holds something else than a mode."""
    if setting is not None:
        return setting, None
    variable = os.environ.get("WANDB_MODE", "").strip()
    if variable.lower() in _WANDB_MODE_VALUES:
        return _WANDB_MODE_VALUES[variable.lower()], f"WANDB_MODE={variable}"
    if variable:  # a typo of online must not log offline unnoticed
        raise ValueError(
            f"WANDB_MODE={variable} is not a W&B mode that sodeep runs with ({', '.join(_WANDB_MODE_VALUES)}); set one of them, "
            "unset WANDB_MODE, or choose the mode with wandb="
        )
    recorded = recorded_wandb_mode(out) if resume else None
    if recorded is not None:
        return recorded, str(Path(out) / "run.json")
    return "offline", None


def recorded_wandb_mode(out: str | os.PathLike) -> str | None:
    """The W&B mode the run in ``out`` records (its ``run.json``), or ``None``."""
    try:
        recorded = json.loads((Path(out) / "run.json").read_text(encoding="utf-8"))["config"]["wandb"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recorded if recorded in WANDB_MODES else None


def wandb_mode_change(out: str | os.PathLike, mode: str, chosen_by: str | None) -> str | None:
    """For a run that resumes in ``out``: the line that says its W&B mode changes (``run.json``
    records another), naming what chose the new one; ``None`` where it stays."""
    recorded = recorded_wandb_mode(out)
    if recorded is None or recorded == mode:
        return None
    return f"note: the run in {out} logged to W&B as {recorded}; from here it logs as {mode} ({chosen_by or 'the setting'})"


def check_scale_out(accelerator: Any, strategy: Any, num_nodes: Any, devices: Any = 1) -> None:
    """Refuse an ``accelerator``, ``strategy`` or ``num_nodes`` that is not a Lightning setting
    a command can run under, and ``single_device`` with several ``devices``, which Lightning would
    train on one alone (Lightning itself checks that the devices exist)."""
    for name, value in (("accelerator", accelerator), ("strategy", strategy)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a Lightning name such as 'auto', got {value!r}")
    if any(word in strategy.lower() for word in _IN_FIT_LAUNCHERS):  # Lightning reads names in any case
        raise ValueError(
            f"strategy {strategy!r} starts its processes inside fit, which sodeep does not support; "
            "use 'ddp' (Lightning starts one process per device by running the command again), torchrun or srun"
        )
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, Integral) or num_nodes < 1:
        raise ValueError(f"num_nodes must be an integer >= 1, got {num_nodes!r}")
    if strategy.strip().lower() == "single_device" and _several_devices(devices):
        raise ValueError(
            f"strategy 'single_device' trains on one device, and devices={devices!r} asks for more; use strategy "
            "'ddp' (or 'auto') to train on them all, or devices=1"
        )


def _several_devices(devices: Any) -> bool:
    """Whether a ``devices`` setting asks for more than one device (-1: all of them)."""
    if isinstance(devices, str):
        words = [word for word in devices.replace(" ", "").split(",") if word]
        if len(words) == 1 and words[0].lstrip("-").isdigit():
            devices = int(words[0])
        else:
            return len(words) > 1
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    return isinstance(devices, Integral) and not isinstance(devices, bool) and (devices > 1 or devices == -1)
