"""A trial's command line, built from the sweep's ``command`` as W&B's agent builds it.

W&B's agent (``wandb/wandb_agent.py``, ``wandb/sdk/launch/sweeps/utils.py``) replaces
``${envvar:NAME}`` inside any word, then each word that is a whole macro: ``${env}``
(``/usr/bin/env``), ``${interpreter}``, ``${program}``, ``${args}`` (``--name=value``),
``${args_no_equals}`` (``--name value``), ``${args_no_hyphens}`` (``name=value``),
``${args_no_boolean_flags}`` (``--name`` for true, nothing for false), ``${args_json}`` (one JSON
word), ``${args_json_file}`` (the path of that JSON), ``${args_append_hydra}`` (``+name=value``)
and ``${args_override_hydra}`` (``++name=value``).  Values are written with Python's ``str``, as
W&B writes them: ``True``, ``0.001``, a nested parameter as ``{'softness': 0.5}``.  Here
``${interpreter}`` is the Python running sodeep (W&B's agent says ``python``).

Example:
    >>> flag_words({"lr": 0.001, "augment": False, "name": "a b"})["args"]
    ['--lr=0.001', '--augment=False', '--name=a b']
    >>> flag_words({"augment": False, "depth": 2})["args_no_boolean_flags"]
    ['--depth=2']
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")


def flag_words(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every ``args*`` macro's words for the trial's parameters (top-level names)."""
    words: dict[str, list[str]] = {
        key: []
        for key in (
            "args",
            "args_no_equals",
            "args_no_hyphens",
            "args_no_boolean_flags",
            "args_append_hydra",
            "args_override_hydra",
        )
    }
    for name, value in params.items():
        pair = f"{name}={value}"
        words["args"].append(f"--{pair}")
        words["args_no_equals"] += [f"--{name}", str(value)]
        words["args_no_hyphens"].append(pair)
        words["args_append_hydra"].append(f"+{pair}")
        words["args_override_hydra"].append(f"++{pair}")
        if isinstance(value, bool):
            words["args_no_boolean_flags"] += [f"--{name}"] if value else []
        else:
            words["args_no_boolean_flags"].append(f"--{pair}")
    words["args_json"] = [json.dumps(dict(params))]
    return words


def build_command(
    command: tuple[str, ...] | list[str],
    params: Mapping[str, Any],
    *,
    interpreter: str,
    program: str | None,
    args_json_file: str | os.PathLike,
    environment: Mapping[str, str],
) -> list[str]:
    """The argument list of one trial (no shell: a value with spaces stays one word)."""
    replacements = flag_words(params)
    replacements["args_json_file"] = [str(args_json_file)]
    replacements["env"] = ["/usr/bin/env"] if os.name != "nt" else []
    replacements["interpreter"] = [interpreter]
    replacements["program"] = [program] if program is not None else []
    words: list[str] = []
    for word in command:
        word = ENVVAR.sub(lambda match: environment.get(match.group(1), match.group(1)), str(word))
        if word.startswith("${") and word.endswith("}"):
            words += replacements[word[2:-1]]
        else:
            words.append(word)
    return words


def resolve_program(program: str | None, launch_directory: Path) -> str | None:
    """``program`` as W&B's agent finds it (relative to where the sweep was started), made
    absolute because each trial runs in its own folder."""
    if program is None:
        return None
    candidate = launch_directory / program
    return str(candidate.resolve()) if not Path(program).is_absolute() and candidate.exists() else program


def sweep_param_text(params: Mapping[str, Any]) -> str:
    """The parameters as the YAML file that ``WANDB_SWEEP_PARAM_PATH`` names: ``wandb.init``
    reads it into ``wandb.config``, as under W&B's agent (``{name: {value: ...}}``)."""
    import yaml

    body = yaml.safe_dump({name: {"value": value} for name, value in params.items()}, sort_keys=False)
    return "wandb_version: 1\n\n" + body
