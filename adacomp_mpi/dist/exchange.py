"""One step of gradient averaging: encode -> Allgatherv -> decode -> average.

Every rank sums the gathered payloads in rank order and divides by the world
size, so the mean is bit-identical everywhere. The dense exchange is the
baseline: one Allreduce of the raw float32 gradients.

A rank whose gradient is not finite sends a void payload instead; every rank
sees it in the same Allgatherv and skips the step, so agreement costs no
extra collective.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from adacomp_mpi.codec.api import (
    Encoded,
    encode_counted,
    encode_void,
    mean_into,
    restore_residues,
)
from adacomp_mpi.codec.state import CodecState
from adacomp_mpi.codec.wire import is_void

from .buffer import GradientBuffer
from .communicator import Communicator
from .scalecom import ScaleComExchange
from .traffic import Exchange, StepTraffic


class AdaCompExchange:
    """Compressed exchange: one payload per rank, one Allgatherv per step."""

    collective = "allgatherv"

    def __init__(self, *, comm: Communicator, state: CodecState) -> None:
        self.comm = comm
        self.state = state

    def average(
        self,
        grads: GradientBuffer,
        *,
        dense: bool = False,
        finite: bool = True,
        encoded: Encoded | None = None,
    ) -> StepTraffic:
        """Replace ``grads`` with the global mean; ``encoded``: this rank's
        payload, when it was encoded already (overlapped with backward).

        When any rank voids the step, ``grads`` are left as they are, this
        rank's residues get back what it sent, and ``applied`` is False.
        """
        specs = self.state.specs
        started = time.perf_counter()
        if not finite:
            payload, counts = encode_void(self.state), {}
        else:
            encoded = encoded or encode_counted(grads.views, self.state, dense=dense)
            payload, counts = encoded.payload, encoded.counts
        ready = time.perf_counter()
        gathered = self.comm.allgatherv(payload)
        communicated = time.perf_counter()
        voided = tuple(rank for rank, p in enumerate(gathered) if is_void(p, specs))
        if voided and finite:
            restore_residues(payload, self.state)
        elif not voided:  # this rank's own payload is not decoded: its encoder knows it
            mean_into(gathered, specs, grads.views, known={self.comm.rank: encoded.positions})
        return StepTraffic(
            sizes=tuple(p.size for p in gathered),
            applied=not voided,
            counts=counts,
            voided_ranks=voided,
            seconds={
                "encode": ready - started,
                "communicate": communicated - ready,
                "decode": time.perf_counter() - communicated,
            },
        )


class DenseExchange:
    """Uncompressed baseline: one in-place Allreduce of the flat gradient buffer.

    A non-finite gradient anywhere makes the mean non-finite on every rank
    alike, so every rank skips that step (the buffer then holds that mean,
    which nothing reads: the next step zeroes it).
    """

    collective = "allreduce"

    def __init__(self, *, comm: Communicator, state: CodecState) -> None:
        self.comm = comm

    def average(
        self,
        grads: GradientBuffer,
        *,
        dense: bool = False,
        finite: bool = True,
        encoded: Encoded | None = None,
    ) -> StepTraffic:
        started = time.perf_counter()
        self.comm.allreduce_sum(grads.flat)
        communicated = time.perf_counter()
        np.divide(grads.flat, np.float32(self.comm.size), out=grads.flat)
        return StepTraffic(
            sizes=(grads.flat.nbytes,) * self.comm.size,
            applied=grads.is_finite(),
            received=grads.flat.nbytes,  # an Allreduce gives each rank one sum back
            seconds={
                "encode": 0.0,
                "communicate": communicated - started,
                "decode": time.perf_counter() - communicated,
            },
        )


ExchangeFactory = Callable[..., Exchange]
EXCHANGES: dict[str, ExchangeFactory] = {
    "adacomp": AdaCompExchange,
    "none": DenseExchange,
    "scalecom": ScaleComExchange,
}


def make_exchange(name: str, *, comm: Communicator, state: CodecState) -> Exchange:
    """Build the exchange registered as ``name``."""
    return EXCHANGES[name](comm=comm, state=state)


__all__ = [
    "EXCHANGES",
    "AdaCompExchange",
    "DenseExchange",
    "Exchange",
    "ScaleComExchange",
    "StepTraffic",
]
