"""``adacomp-train``: the command group; ``train`` is the default command."""

from __future__ import annotations

import sys

import click

from adacomp_mpi import __version__

from .common import PROG, fail
from .env import env
from .report import report
from .train import train


class DefaultToTrain(click.Group):
    """``adacomp-train [OPTIONS]`` means ``adacomp-train train [OPTIONS]``, except
    for the group's own options (``--help``, ``--version``), which its help lists."""

    def own_options(self, ctx: click.Context) -> set[str]:
        return {
            flag
            for param in self.get_params(ctx)
            for flag in (*param.opts, *getattr(param, "secondary_opts", ()))
        }

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in {*self.commands, *self.own_options(ctx)}:
            args = ["train", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultToTrain, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG, message="%(prog)s %(version)s")
def cli() -> None:
    """Data-parallel PyTorch training over MPI with AdaComp gradient compression.

    With no command, runs `train`.

    \b
    Examples:
      mpiexec -n 4 adacomp-train --epochs 5
      mpiexec -n 4 adacomp-train train --compression none --output-dir runs/dense
      adacomp-train report runs/dense runs/latest
      mpiexec -n 4 adacomp-train env
    """


cli.add_command(train)
cli.add_command(report)
cli.add_command(env)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click errors become one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as error:
        fail(error.format_message().replace("\n", " "))
