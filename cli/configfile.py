"""``--config FILE``: options from TOML or JSON, below env vars and the command line.

Click resolves each option from the command line, then ``ADACOMP_*``
variables, then ``ctx.default_map``, then the built-in default; the config file
fills ``default_map``, which gives exactly that precedence.

A key is an option's name as recorded in config.json (``bin_sizes``) or as its
flag is spelt (``bin-size``, ``bin_size``), so both a recorded run and a file
written from ``--help`` read back.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from .sources import CONFIG_FILE_META

# A recorded run's config.json names where that run wrote; replaying those
# would overwrite it, so a rerun takes its output places from elsewhere.
NOT_REPLAYED = ("output_dir", "summary", "resume", "overwrite")
CONFIG_OPTION = "config"


def _load_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


LOADERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    ".toml": _load_toml,
    ".json": _load_json,
}


def _key_value_items(value: Any) -> Any:
    """A table or a space-separated string (as in ADACOMP_BIN_SIZES) -> KEY=VALUE items."""
    if isinstance(value, dict):
        return [f"{key}={size}" for key, size in value.items()]
    if isinstance(value, str):
        return value.split()
    return value


def _overlap_mode(value: Any) -> Any:
    """Runs recorded before --overlap had an auto mode hold true/false."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


DEFAULT_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "bin_sizes": _key_value_items,
    "model_options": _key_value_items,
    "scalecom_per_bin": _key_value_items,
    "overlap": _overlap_mode,
}


def _as_default(name: str, value: Any) -> Any:
    return DEFAULT_CONVERTERS.get(name, lambda given: given)(value)


def _bad(path: Path, message: str) -> click.BadParameter:
    return click.BadParameter(f"{path}: {message}", param_hint="'--config'")


def option_keys(command: click.Command) -> dict[str, str]:
    """Accepted key -> option name: each option's name and its flags' spellings."""
    keys: dict[str, str] = {}
    for param in command.params:
        if not param.name or param.name == CONFIG_OPTION:
            continue
        flags = [*param.opts, *getattr(param, "secondary_opts", ())]
        spellings = [flag.lstrip("-").replace("-", "_") for flag in flags if flag.startswith("--")]
        keys.update(dict.fromkeys([param.name, *spellings], param.name))
    return keys


def _suggestion(key: str, known: Mapping[str, str], *, name_key: bool) -> str | None:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if not close:
        return None
    return f"{close[0]!r} for {key!r}" if name_key else repr(close[0])


def _unknown_message(unknown: list[str], known: Mapping[str, str]) -> str:
    """``unknown options [...]``, with the closest accepted key for each where one is close."""
    hints = [_suggestion(key, known, name_key=len(unknown) > 1) for key in unknown]
    listed = ", ".join(hint for hint in hints if hint)
    return f"unknown options {unknown}" + (f" (did you mean {listed}?)" if listed else "")


def _by_option_name(
    path: Path, options: dict[str, Any], known: Mapping[str, str]
) -> dict[str, Any]:
    """Keys renamed to option names; unknown keys, or two keys for one option, refused."""
    unknown = sorted(key for key in options if key not in known)
    if unknown:
        raise _bad(path, _unknown_message(unknown, known))
    renamed: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in options.items():
        name = known[key]
        if name in given_as:
            raise _bad(path, f"{given_as[name]!r} and {key!r} are the same option; keep one")
        given_as[name], renamed[name] = key, value
    return renamed


def read_options(path: Path, known: Mapping[str, str]) -> dict[str, Any]:
    """Option name -> value from ``path``; a recorded config.json's "options" too.

    ``known`` maps each accepted key (see ``option_keys``) to its option's name.
    """
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise _bad(path, "use a .toml or .json file")
    try:
        content = loader(path)
    except (OSError, ValueError) as error:
        raise _bad(path, str(error)) from None
    recorded = isinstance(content, dict) and isinstance(content.get("options"), dict)
    options = content["options"] if recorded else content
    if not isinstance(options, dict):
        raise _bad(path, "expected a table of options")
    options = {key.replace("-", "_"): value for key, value in options.items()}
    if "checkpoint_unit" in options:  # recorded as two fields, given as one option
        unit = options.pop("checkpoint_unit")
        options["checkpoint_every"] = f"{options.get('checkpoint_every', 0)}{unit}"
    options = _by_option_name(path, options, known)
    skipped = NOT_REPLAYED if recorded else ()
    return {
        name: _as_default(name, value)
        for name, value in options.items()
        if value is not None and name not in skipped
    }


def apply_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Eager callback: load the file into ``ctx.default_map`` before other options."""
    if value is None:
        return
    ctx.meta[CONFIG_FILE_META] = value
    ctx.default_map = {**(ctx.default_map or {}), **read_options(value, option_keys(ctx.command))}
