"""Where the ranks of a job run: hostnames and PIDs, gathered once at start."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from adacomp_mpi.common.log import get_logger

from .communicator import Communicator, hostname


@dataclass(frozen=True)
class Launch:
    """Every rank's host and PID, indexed by rank."""

    hostnames: tuple[str, ...]
    pids: tuple[int, ...]

    def local_rank(self, rank: int) -> int:
        """This rank's index among the ranks on its host (picks its GPU)."""
        return self.hostnames[:rank].count(self.hostnames[rank])

    def ranks_per_host(self) -> dict[str, int]:
        return dict(Counter(self.hostnames))


def describe_launch(comm: Communicator) -> Launch:
    """Collective: gather every rank's host and PID, and log them on rank 0."""
    places = comm.allgather_object((hostname(), os.getpid()))
    launch = Launch(tuple(host for host, _ in places), tuple(pid for _, pid in places))
    log = get_logger()
    ranks = ", ".join(f"{r}=pid {pid}@{host}" for r, (host, pid) in enumerate(places))
    log.info("ranks: %s", ranks)
    hosts = ", ".join(f"{host} x{count}" for host, count in launch.ranks_per_host().items())
    log.info("world size %d on %d host(s): %s", comm.size, len(launch.ranks_per_host()), hosts)
    return launch
