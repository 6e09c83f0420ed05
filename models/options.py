"""``--model-option KEY=VALUE`` for the zoo: text values onto a model's config.

Each zoo model has a frozen dataclass of its sizes; an option names one of its
fields and is parsed by the type of that field's default (``hidden=512,256``
for a tuple of ints), so every model gets options without code of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

C = TypeVar("C")


def _parse_int_tuple(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("expected comma-separated integers")
    return tuple(int(part) for part in parts)


def _parse_bool(text: str) -> bool:
    table = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    try:
        return table[text.strip().lower()]
    except KeyError:
        raise ValueError("expected true or false") from None


PARSERS: dict[type, Callable[[str], Any]] = {
    bool: _parse_bool,
    int: int,
    float: float,
    str: str,
    tuple: _parse_int_tuple,
}


def apply_options(config: C, options: Mapping[str, str], *, model: str) -> C:
    """``config`` with ``options`` applied; ValueError names the key and the choices."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    changes = {}
    for key, text in options.items():
        if key not in fields:
            raise ValueError(
                f"model {model!r} has no option {key!r}; its options are "
                + ", ".join(f"{name}={_show(value)}" for name, value in fields.items())
            )
        try:
            changes[key] = _positive_sizes(PARSERS[type(fields[key])](str(text)))
        except ValueError as error:
            raise ValueError(f"model option {key}={text!r}: {error}") from None
    try:
        return dataclasses.replace(config, **changes)
    except ValueError as error:
        raise ValueError(f"model {model!r}: {error}") from None


def _positive_sizes(value: Any) -> Any:
    """Every integer in a zoo config is a size or a count: at least 1."""
    sizes = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, int) and not isinstance(v, bool) and v < 1 for v in sizes):
        raise ValueError("sizes must be at least 1")
    return value


def _show(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
