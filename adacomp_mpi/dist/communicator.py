"""The only module that imports mpi4py: collectives the trainer needs, and a
one-process stand-in with the same interface for tests and single-rank runs.
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

import numpy as np


class Communicator(Protocol):
    """Collectives used by the exchange and the trainer."""

    rank: int
    size: int

    def allgatherv(self, payload: np.ndarray) -> list[np.ndarray]: ...
    def allreduce_sum(self, array: np.ndarray) -> None: ...
    def broadcast(self, array: np.ndarray, *, root: int = 0) -> None: ...
    def broadcast_bytes(self, payload: np.ndarray | None, *, root: int) -> np.ndarray: ...
    def allgather_object(self, value: Any) -> list[Any]: ...
    def broadcast_object(self, value: Any, *, root: int = 0) -> Any: ...
    def send_object(self, value: Any, *, dest: int) -> None: ...
    def recv_object(self, *, source: int) -> Any: ...
    def abort(self, code: int) -> None: ...


class LocalCommunicator:
    """World of one: every collective is the identity."""

    rank = 0
    size = 1

    def allgatherv(self, payload: np.ndarray) -> list[np.ndarray]:
        return [payload]

    def allreduce_sum(self, array: np.ndarray) -> None:
        return None

    def broadcast(self, array: np.ndarray, *, root: int = 0) -> None:
        return None

    def broadcast_bytes(self, payload: np.ndarray | None, *, root: int) -> np.ndarray:
        return np.ascontiguousarray(payload, dtype=np.uint8)

    def allgather_object(self, value: Any) -> list[Any]:
        return [value]

    def broadcast_object(self, value: Any, *, root: int = 0) -> Any:
        return value

    def send_object(self, value: Any, *, dest: int) -> None:
        raise RuntimeError("a world of one has no other rank to send to")

    def recv_object(self, *, source: int) -> Any:
        raise RuntimeError("a world of one has no other rank to receive from")

    def abort(self, code: int) -> None:
        raise SystemExit(code)


class MpiCommunicator:
    """mpi4py collectives on COMM_WORLD (or a given communicator)."""

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self._comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank: int = self._comm.Get_rank()
        self.size: int = self._comm.Get_size()

    def allgatherv(self, payload: np.ndarray) -> list[np.ndarray]:
        """Sizes first (one Allgather), then every payload in one Allgatherv."""
        payload = np.ascontiguousarray(payload, dtype=np.uint8)
        sizes = np.empty(self.size, np.int64)
        self._comm.Allgather(np.array([payload.size], np.int64), sizes)
        offsets = np.zeros(self.size, np.int64)
        np.cumsum(sizes[:-1], out=offsets[1:])
        received = np.empty(int(sizes.sum()), np.uint8)
        self._comm.Allgatherv(payload, [received, (sizes, offsets), self._mpi.BYTE])
        return [received[o : o + s] for o, s in zip(offsets, sizes, strict=True)]

    def allreduce_sum(self, array: np.ndarray) -> None:
        """In-place elementwise sum across ranks."""
        self._comm.Allreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)

    def broadcast(self, array: np.ndarray, *, root: int = 0) -> None:
        self._comm.Bcast(array, root=root)

    def broadcast_bytes(self, payload: np.ndarray | None, *, root: int) -> np.ndarray:
        """``root``'s byte string (``payload`` there, ignored elsewhere) on every
        rank: its length first (one Bcast of an int64), then the bytes (one
        Bcast), so the other ranks need not know the size in advance."""
        length = np.zeros(1, np.int64)
        if self.rank == root:
            payload = np.ascontiguousarray(payload, dtype=np.uint8)
            length[0] = payload.size
        self._comm.Bcast(length, root=root)
        received = payload if self.rank == root else np.empty(int(length[0]), np.uint8)
        self._comm.Bcast(received, root=root)
        return received

    def allgather_object(self, value: Any) -> list[Any]:
        return self._comm.allgather(value)

    def broadcast_object(self, value: Any, *, root: int = 0) -> Any:
        return self._comm.bcast(value, root=root)

    def send_object(self, value: Any, *, dest: int) -> None:
        self._comm.send(value, dest=dest)

    def recv_object(self, *, source: int) -> Any:
        return self._comm.recv(source=source)

    def abort(self, code: int) -> None:
        self._comm.Abort(code)


def mpi_library_version() -> str:
    from mpi4py import MPI

    return MPI.Get_library_version().strip().splitlines()[0]


def hostname() -> str:
    return socket.gethostname()
