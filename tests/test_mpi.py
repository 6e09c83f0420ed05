"""MPI tier: real collectives under mpiexec -n 2 and -n 3, each with a hard time limit."""

from __future__ import annotations

import pytest
from mpi_util import run_program

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("ranks", [2, 3])
def test_allgatherv_and_identical_means(ranks: int) -> None:
    result = run_program(ranks, "exchange_check.py", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK on {ranks} ranks" in result.stdout


@pytest.mark.parametrize("ranks", [2, 3])
def test_dense_matches_sgd_and_replicas_stay_identical(ranks: int) -> None:
    result = run_program(ranks, "dense_parity.py", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK on {ranks} ranks" in result.stdout
