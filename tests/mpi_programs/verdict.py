"""Collect per-rank check failures and agree on a verdict without skipping collectives."""

from __future__ import annotations

import sys

from mpi4py import MPI


class Verdict:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.failures.append(message)

    def finish(self) -> None:
        """Every rank calls this last; all exit 1 if any rank failed."""
        comm = MPI.COMM_WORLD
        everyone = comm.allgather(self.failures)
        failed = [f"rank {r}: {m}" for r, ms in enumerate(everyone) for m in ms]
        if comm.rank == 0:
            print("\n".join(failed) if failed else f"OK on {comm.size} ranks")
        sys.exit(1 if failed else 0)
