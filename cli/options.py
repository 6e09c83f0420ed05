"""Click parameter types for the trainer's options."""

from __future__ import annotations

import re

import click

EVERY = re.compile(r"^(\d+)\s*(steps?|epochs?|ep|e)?$")


class BinSizeType(click.ParamType):
    """``KEY=L``: L_T for a layer kind (conv, fc, recurrent, embedding) or a parameter name."""

    name = "KEY=L_T"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        key, sep, size = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=L_T (e.g. conv=50 or 0.weight=200)", param, ctx)
        try:
            bin_size = int(size)
        except ValueError:
            self.fail(f"L_T in {value!r} is not an integer", param, ctx)
        if bin_size < 2:
            self.fail(f"L_T must be >= 2, got {bin_size} in {value!r}", param, ctx)
        return key, bin_size


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
