"""``--config FILE``: options from TOML or JSON, below env vars and the command line.

Click resolves each option from the command line, then ``ADACOMP_*``
variables, then ``ctx.default_map``, then the built-in default; the config file
fills ``default_map``, which gives exactly that precedence.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# A recorded run's config.json names where that run wrote; replaying those
# would overwrite it, so a rerun takes its output places from elsewhere.
NOT_REPLAYED = ("output_dir", "summary", "resume")


def _load_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


LOADERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    ".toml": _load_toml,
    ".json": _load_json,
}


def _as_default(name: str, value: Any) -> Any:
    if name == "bin_sizes" and isinstance(value, dict):
        return [f"{key}={size}" for key, size in value.items()]
    return value


def read_options(path: Path, known: set[str]) -> dict[str, Any]:
    """Option name -> value from ``path``; a recorded config.json's "options" too."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise click.BadParameter(f"{path}: use a .toml or .json file", param_hint="'--config'")
    try:
        content = loader(path)
    except (OSError, ValueError) as error:
        raise click.BadParameter(f"{path}: {error}", param_hint="'--config'") from None
    recorded = isinstance(content, dict) and isinstance(content.get("options"), dict)
    options = content["options"] if recorded else content
    if not isinstance(options, dict):
        raise click.BadParameter(f"{path}: expected a table of options", param_hint="'--config'")
    options = {key.replace("-", "_"): value for key, value in options.items()}
    if "checkpoint_unit" in options:  # recorded as two fields, given as one option
        unit = options.pop("checkpoint_unit")
        options["checkpoint_every"] = f"{options.get('checkpoint_every', 0)}{unit}"
    unknown = sorted(set(options) - known)
    if unknown:
        raise click.BadParameter(f"{path}: unknown options {unknown}", param_hint="'--config'")
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
    known = {p.name for p in ctx.command.params if p.name and p.name != "config"}
    ctx.default_map = {**(ctx.default_map or {}), **read_options(value, known)}
