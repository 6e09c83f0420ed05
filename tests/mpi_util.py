"""Run real MPI jobs from tests, with a hard time limit so a bug fails fast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PROGRAMS = Path(__file__).parent / "mpi_programs"
MPI_TIMEOUT = 180


def mpiexec() -> str:
    found = BIN / "mpiexec"
    if found.exists():
        return str(found)
    which = shutil.which("mpiexec")
    if which is None:
        pytest.skip("no mpiexec: install the package (it brings the mpich wheel)")
    return which


def run_mpi(
    ranks: int,
    args: list[str],
    *,
    timeout: float = MPI_TIMEOUT,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n ranks args``; kills the whole job when the limit passes."""
    command = [mpiexec(), "-n", str(ranks), *args]
    merged = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=merged
        )
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"MPI job hung past {timeout} s: {command}\n{expired.stdout}\n{expired.stderr}")


def run_program(ranks: int, name: str, *args: str, timeout: float = MPI_TIMEOUT):
    """Run tests/mpi_programs/<name> under ``python -m mpi4py`` (aborts all ranks on error)."""
    return run_mpi(
        ranks, [sys.executable, "-m", "mpi4py", str(PROGRAMS / name), *args], timeout=timeout
    )


def train_command() -> list[str]:
    return [str(BIN / "adacomp-train")]
