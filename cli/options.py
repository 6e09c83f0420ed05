"""Click parameter types for the trainer's options."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

T = TypeVar("T")

EVERY = re.compile(r"^(\d+)\s*(steps?|epochs?|ep|e)?$")
# A layer kind (conv, fc, ...) or a parameter name as torch spells it (0.weight,
# encoder.layers.1.bias): dot-separated words of letters, digits and underscores.
# Whether the key names a kind or parameter of the model is checked once it is built.
BIN_SIZE_KEY = re.compile(r"^\w+(\.\w+)*$", re.ASCII)


class KeyCountType(click.ParamType):
    """``KEY=N``: a whole number for a layer kind (conv, fc, recurrent, embedding)
    or a parameter name; ``label`` names N in messages, ``minimum`` bounds it."""

    label, minimum, example = "N", 1, "fc=5"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"KEY={self.label}"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        key, sep, text = (part.strip() for part in str(value).partition("="))
        if not sep or not key:
            self.fail(f"{value!r} is not {self.name} (e.g. {self.example})", param, ctx)
        if not BIN_SIZE_KEY.match(key):
            self.fail(
                f"key {key!r} in {value!r} is not a layer kind or parameter name "
                "(e.g. conv, fc or 0.weight)",
                param,
                ctx,
            )
        try:
            count = int(text)
        except ValueError:
            self.fail(f"{self.label} in {value!r} is not an integer", param, ctx)
        if count < self.minimum:
            self.fail(
                f"{self.label} must be >= {self.minimum}, got {count} in {value!r}", param, ctx
            )
        return key, count


class BinSizeType(KeyCountType):
    """``KEY=L``: L_T for a layer kind or a parameter name."""

    label, minimum, example = "L_T", 2, "conv=50 or 0.weight=200"


def bin_size_table(
    ctx: click.Context, param: click.Parameter, pairs: Iterable[tuple[str, int]]
) -> dict[str, int]:
    """Callback: the (key, L_T) pairs as a table; a key given two different L_T is
    refused, since keeping either one would silently drop the other."""
    return _one_value_per_key(pairs)


class KeyValueType(click.ParamType):
    """``KEY=VALUE`` with a non-empty key; the value is checked by whoever reads it."""

    name = "KEY=VALUE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        key, sep, text = (part.strip() for part in str(value).partition("="))
        if not sep or not key or not text:
            self.fail(f"{value!r} is not KEY=VALUE (e.g. hidden=512,256)", param, ctx)
        return key, text


def key_value_table(
    ctx: click.Context, param: click.Parameter, pairs: Iterable[tuple[str, str]]
) -> dict[str, str]:
    """Callback: KEY=VALUE pairs as a table; a key given twice differently is refused."""
    return _one_value_per_key(pairs)


def _one_value_per_key(pairs: Iterable[tuple[str, T]]) -> dict[str, T]:
    """The pairs as a table; a key given twice with two values is refused, since
    keeping either one would silently drop the other."""
    table: dict[str, T] = {}
    for key, value in pairs:
        if table.setdefault(key, value) != value:
            raise click.BadParameter(f"{key!r} is given twice ({table[key]} and {value})")
    return table


class EveryType(click.ParamType):
    """``N`` or ``Nsteps`` (steps) or ``Nepochs`` / ``Nep``: how often to checkpoint."""

    name = "N[steps|epochs]"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        match = EVERY.match(str(value).strip().lower())
        if not match:
            self.fail(f"{value!r} is not N, Nsteps or Nepochs (e.g. 500 or 1epoch)", param, ctx)
        unit = "epochs" if (match.group(2) or "s").startswith("e") else "steps"
        return int(match.group(1)), unit


def option_group(
    options: Sequence[Callable[[Callable[..., Any]], Callable[..., Any]]],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that adds ``options`` to a click command, in their order in --help."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply
