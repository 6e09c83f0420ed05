"""What every exchange returns and the interface they share (kept apart from
the registry in ``exchange`` so that each exchange module can import it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from adacomp_mpi.codec.api import Encoded
from adacomp_mpi.codec.counters import StepCounts

from .buffer import GradientBuffer


@dataclass(frozen=True)
class StepTraffic:
    """What one exchange did: bytes each rank put into the collectives, what
    this rank's payload held per layer kind, timings, and whether to apply
    the result.

    ``received``: the most bytes one rank got out of the collectives; None
    means every payload (an Allgatherv: ``sum(sizes)``).
    """

    sizes: tuple[int, ...]
    applied: bool
    counts: StepCounts = field(default_factory=dict)
    voided_ranks: tuple[int, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)  # encode, communicate, decode
    received: int | None = None

    @property
    def received_per_rank(self) -> int:
        return sum(self.sizes) if self.received is None else self.received


class Exchange(Protocol):
    """Turns this rank's gradients into the global mean, in place."""

    collective: str  # what a rank waits in during the exchange (for the watchdog)

    def average(
        self,
        grads: GradientBuffer,
        *,
        dense: bool = False,
        finite: bool = True,
        encoded: Encoded | None = None,
    ) -> StepTraffic: ...
