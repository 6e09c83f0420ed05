"""One step of gradient averaging: encode -> Allgatherv -> decode -> average.

Every rank sums the gathered payloads in rank order and divides by the world
size, so the mean is bit-identical everywhere. The dense exchange is the
baseline: one Allreduce of the raw float32 gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from .codec import accumulate, encode
from .communicator import Communicator
from .state import CodecState


class Exchange(Protocol):
    """Turns this rank's gradients into the global mean, in place."""

    bytes_sent: int

    def average(self, grads: Sequence[np.ndarray], *, dense: bool = False) -> None: ...


class AdaCompExchange:
    """Compressed exchange: one payload per rank, one Allgatherv per step."""

    def __init__(self, *, comm: Communicator, state: CodecState) -> None:
        self.comm = comm
        self.state = state
        self.bytes_sent = 0

    def average(self, grads: Sequence[np.ndarray], *, dense: bool = False) -> None:
        """Replace ``grads`` (flat float32, layout order) with the global mean."""
        specs = self.state.specs
        payload = encode(
            {s.name: g for s, g in zip(specs, grads, strict=True)}, self.state, dense=dense
        )
        self.bytes_sent += payload.size
        for grad in grads:
            grad.fill(0)
        for received in self.comm.allgatherv(payload):
            accumulate(received, specs, grads)
        divisor = np.float32(self.comm.size)
        for grad in grads:
            grad /= divisor


class DenseExchange:
    """Uncompressed baseline: Allreduce of all gradients in one flat buffer."""

    def __init__(self, *, comm: Communicator, state: CodecState) -> None:
        self.comm = comm
        self.bytes_sent = 0
        self._flat = np.empty(sum(s.numel for s in state.specs), np.float32)

    def average(self, grads: Sequence[np.ndarray], *, dense: bool = False) -> None:
        offsets = np.cumsum([0, *(g.size for g in grads)])
        for grad, start, stop in zip(grads, offsets[:-1], offsets[1:], strict=True):
            self._flat[start:stop] = grad
        self.comm.allreduce_sum(self._flat)
        self._flat /= np.float32(self.comm.size)
        self.bytes_sent += self._flat.nbytes
        for grad, start, stop in zip(grads, offsets[:-1], offsets[1:], strict=True):
            grad[...] = self._flat[start:stop]


ExchangeFactory = Callable[..., Exchange]
EXCHANGES: dict[str, ExchangeFactory] = {
    "adacomp": AdaCompExchange,
    "none": DenseExchange,
}


def make_exchange(name: str, *, comm: Communicator, state: CodecState) -> Exchange:
    """Build the exchange registered as ``name``."""
    return EXCHANGES[name](comm=comm, state=state)


__all__ = ["EXCHANGES", "AdaCompExchange", "DenseExchange", "Exchange", "make_exchange"]
