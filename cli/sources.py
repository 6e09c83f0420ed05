"""Where an option's value comes from: ``ADACOMP_*`` variables and ``--config``.

click reads ``ADACOMP_<DEST>`` for each option, named after the option's
destination, not its flag (``--bin-size`` is ``ADACOMP_BIN_SIZES``), and
ignores every other ``ADACOMP_*`` variable. A misspelt variable would leave its
option at the default without a word, so ``CheckedCommand`` refuses variables
that no option reads, and names the variable or config file behind a bad value
(the command line is not where the user would look for it).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

# ADACOMP_* variables that the project reads but that are no option of ``train``.
# The one list of them: every other ADACOMP_* variable must name an option.
NON_OPTION_VARIABLES = (
    "ADACOMP_DATA_DIR",  # adacomp_mpi/datasets/files.py: where loaders look by default
    "ADACOMP_SHAKESPEARE_MAX_BYTES",  # adacomp_mpi/datasets/shakespeare.py: corpus cap
    "ADACOMP_VENV",  # scripts/slurm/*.sbatch, scripts/netns/twohost.sh: the virtualenv
    "ADACOMP_LAUNCHER",  # scripts/slurm/*.sbatch: srun or mpiexec
    "ADACOMP_HYPOTHESIS_SCALE",  # tests/test_codec.py: how many examples to try
)
CONFIG_FILE_META = "adacomp_mpi.config_file"  # ctx.meta key: the --config file read


def option_variables(ctx: click.Context) -> dict[str, click.Option]:
    """Variable name -> the option reading it, in click's lookup order."""
    found: dict[str, click.Option] = {}
    for param in ctx.command.params:
        if not isinstance(param, click.Option):
            continue
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
        if param.allow_from_autoenv and ctx.auto_envvar_prefix and param.name:
            names.append(f"{ctx.auto_envvar_prefix}_{param.name.upper()}")
        found.update(dict.fromkeys(names, param))
    return found


def unknown_variables(ctx: click.Context) -> list[str]:
    """Set ``PREFIX_*`` variables that neither an option nor the project reads."""
    if not ctx.auto_envvar_prefix:
        return []
    prefix = f"{ctx.auto_envvar_prefix}_"
    allowed = {*option_variables(ctx), *NON_OPTION_VARIABLES}
    return sorted(name for name in os.environ if name.startswith(prefix) and name not in allowed)


def _with_suggestion(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f"{name} (did you mean {close[0]}?)" if close else name


def unknown_variables_message(ctx: click.Context, names: list[str]) -> str:
    """One line naming each unknown variable, with the closest real one."""
    candidates = sorted(option_variables(ctx))
    listed = ", ".join(_with_suggestion(name, candidates) for name in names)
    plural = len(names) > 1
    return (
        f"unknown environment variable{'s' if plural else ''} {listed}: "
        f"no option of '{ctx.command_path}' reads {'them' if plural else 'it'}; "
        f"rename or unset {'them' if plural else 'it'}"
    )


def variable_of(ctx: click.Context, param: click.Parameter) -> str:
    """The variable that supplied ``param``'s value (the first set one, as click reads)."""
    names = [name for name, option in option_variables(ctx).items() if option is param]
    return next((name for name in names if os.environ.get(name)), names[0] if names else "?")


def _config_file(ctx: click.Context, param: click.Parameter) -> str:
    path: Path | None = ctx.meta.get(CONFIG_FILE_META)
    return f"from config file {path}" if path else "from the config file"


SOURCE_HINTS: dict[ParameterSource, Callable[[click.Context, click.Parameter], str]] = {
    ParameterSource.ENVIRONMENT: lambda ctx, param: f"from {variable_of(ctx, param)}",
    ParameterSource.DEFAULT_MAP: _config_file,
}


def name_the_source(error: click.BadParameter) -> None:
    """Add where a bad value came from to its hint, unless the command line gave it."""
    ctx, param = error.ctx, error.param
    if ctx is None or param is None or param.name is None or error.param_hint is not None:
        return
    hint = SOURCE_HINTS.get(ctx.get_parameter_source(param.name))
    if hint is not None:
        error.param_hint = f"{param.get_error_hint(ctx)} ({hint(ctx, param)})"


@contextmanager
def _sources_named() -> Iterator[None]:
    try:
        yield
    except click.BadParameter as error:
        name_the_source(error)
        raise


class CheckedCommand(click.Command):
    """A command whose ``PREFIX_*`` variables must each name one of its options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _sources_named():
            rest = super().parse_args(ctx, args)
        unknown = [] if ctx.resilient_parsing else unknown_variables(ctx)
        if unknown:
            raise click.UsageError(unknown_variables_message(ctx, unknown), ctx=ctx)
        return rest

    def invoke(self, ctx: click.Context) -> Any:
        with _sources_named():
            return super().invoke(ctx)
