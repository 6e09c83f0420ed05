"""What every command shares: the program name and the one-line failure."""

from __future__ import annotations

import os
import sys

import click

PROG = "adacomp-train"
USAGE_EXIT = 2
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """This process's rank as the launcher announced it (before MPI starts)."""
    for variable in LAUNCHER_RANK_VARIABLES:
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def fail(message: str, *, exit_code: int = USAGE_EXIT) -> None:
    """One line on rank 0, the exit code on every rank."""
    if launcher_rank() == 0:
        click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(exit_code)
