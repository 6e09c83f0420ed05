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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .codec import accumulate, encode, encode_void, restore_residues
from .communicator import Communicator
from .state import CodecState
from .wire import is_void


@dataclass(frozen=True)
class StepTraffic:
    """What one exchange did: payload sizes per rank, timings, whether to apply it."""

    sizes: tuple[int, ...]
    applied: bool
    voided_ranks: tuple[int, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)  # encode, communicate, decode


class Exchange(Protocol):
    """Turns this rank's gradients into the global mean, in place."""

    bytes_sent: int

    def average(
        self, grads: Sequence[np.ndarray], *, dense: bool = False, finite: bool = True
    ) -> StepTraffic: ...


class AdaCompExchange:
    """Compressed exchange: one payload per rank, one Allgatherv per step."""

    def __init__(self, *, comm: Communicator, state: CodecState) -> None:
        self.comm = comm
        self.state = state
        self.bytes_sent = 0

    def average(
        self, grads: Sequence[np.ndarray], *, dense: bool = False, finite: bool = True
    ) -> StepTraffic:
        """Replace ``grads`` (flat float32, layout order) with the global mean.

        When any rank voids the step, ``grads`` are left as they are, this
        rank's residues get back what it sent, and ``applied`` is False.
        """
        specs = self.state.specs
        started = time.perf_counter()
        if finite:
            named = {s.name: g for s, g in zip(specs, grads, strict=True)}
            payload = encode(named, self.state, dense=dense)
        else:
            payload = encode_void(self.state)
        encoded = time.perf_counter()
        gathered = self.comm.allgatherv(payload)
        communicated = time.perf_counter()
        self.bytes_sent += payload.size
        voided = tuple(rank for rank, p in enumerate(gathered) if is_void(p, specs))
        if voided and finite:
            restore_residues(payload, self.state)
        elif not voided:
            self._mean_into(gathered, grads)
        return StepTraffic(
            sizes=tuple(p.size for p in gathered),
            applied=not voided,
            voided_ranks=voided,
            seconds={
                "encode": encoded - started,
                "communicate": communicated - encoded,
                "decode": time.perf_counter() - communicated,
            },
        )

    def _mean_into(self, gathered: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        for grad in grads:
            grad.fill(0)
        for received in gathered:
            accumulate(received, self.state.specs, grads)
        divisor = np.float32(self.comm.size)
        for grad in grads:
            grad /= divisor


class DenseExchange:
    """Uncompressed baseline: Allreduce of all gradients in one flat buffer.

    A non-finite gradient anywhere makes the mean non-finite on every rank
    alike, so every rank skips that step.
    """

    def __init__(self, *, comm: Communicator, state: CodecState) -> None:
        self.comm = comm
        self.bytes_sent = 0
        self._offsets = np.cumsum([0, *(s.numel for s in state.specs)])
        self._flat = np.empty(int(self._offsets[-1]), np.float32)

    def average(
        self, grads: Sequence[np.ndarray], *, dense: bool = False, finite: bool = True
    ) -> StepTraffic:
        started = time.perf_counter()
        offsets = self._offsets
        for grad, start, stop in zip(grads, offsets[:-1], offsets[1:], strict=True):
            self._flat[start:stop] = grad
        packed = time.perf_counter()
        self.comm.allreduce_sum(self._flat)
        communicated = time.perf_counter()
        self._flat /= np.float32(self.comm.size)
        self.bytes_sent += self._flat.nbytes
        applied = bool(np.isfinite(self._flat).all())
        if applied:
            for grad, start, stop in zip(grads, offsets[:-1], offsets[1:], strict=True):
                grad[...] = self._flat[start:stop]
        return StepTraffic(
            sizes=(self._flat.nbytes,) * self.comm.size,
            applied=applied,
            seconds={
                "encode": packed - started,
                "communicate": communicated - packed,
                "decode": time.perf_counter() - communicated,
            },
        )


ExchangeFactory = Callable[..., Exchange]
EXCHANGES: dict[str, ExchangeFactory] = {
    "adacomp": AdaCompExchange,
    "none": DenseExchange,
}


def make_exchange(name: str, *, comm: Communicator, state: CodecState) -> Exchange:
    """Build the exchange registered as ``name``."""
    return EXCHANGES[name](comm=comm, state=state)


__all__ = ["EXCHANGES", "AdaCompExchange", "DenseExchange", "Exchange", "StepTraffic"]
