"""``adacomp-train env``: what someone debugging a cluster launch needs to see."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import click

LAUNCHER_VARIABLES = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NODELIST", "PMI_RANK", "PMI_SIZE")


def _resolved_train_defaults() -> dict[str, Any]:
    """What ``train`` would use with no options: defaults plus ADACOMP_* variables."""
    from .train import train

    with train.make_context("train", [], resilient_parsing=False) as ctx:
        return {
            k: str(v) if v is not None and not isinstance(v, int | float | bool) else v
            for k, v in ctx.params.items()
        }


def _cuda() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"available": False}
    count = torch.cuda.device_count()
    return {
        "available": True,
        "devices": [torch.cuda.get_device_name(i) for i in range(count)],
    }


def gather_environment() -> dict[str, Any]:
    """Collective under MPI: every rank reports its hostname."""
    from adacomp_mpi.dist.communicator import MpiCommunicator, hostname
    from adacomp_mpi.train.runinfo import library_versions

    comm = MpiCommunicator()
    hostnames = comm.allgather_object(hostname())
    return {
        "rank": comm.rank,
        "versions": library_versions(),
        "world_size": comm.size,
        "hostnames": hostnames,
        "ranks_per_host": dict(Counter(hostnames)),
        "launcher": {v: os.environ[v] for v in LAUNCHER_VARIABLES if v in os.environ},
        "cuda": _cuda(),
        "train_defaults": _resolved_train_defaults(),
    }


def _print_text(report: dict[str, Any]) -> None:
    for section in ("versions", "launcher", "cuda", "train_defaults"):
        click.echo(f"{section}:")
        for key, value in report[section].items():
            click.echo(f"  {key:<18} {value}")
    click.echo(f"world_size: {report['world_size']}")
    for host, count in report["ranks_per_host"].items():
        click.echo(f"  {host:<18} {count} rank(s)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def env(as_json: bool) -> None:
    """Show MPI library and version, world size and hosts, torch/numpy
    versions, CUDA, and the train defaults after ADACOMP_* variables.

    \b
    Example (checks the launch itself):
      mpiexec -n 4 adacomp-train env
      srun --mpi=pmi2 -n 4 adacomp-train env --json
    """
    report = gather_environment()
    if report.pop("rank") != 0:
        return
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_text(report)
