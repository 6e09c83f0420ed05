"""The run's ledger: where training stands and what it has cost so far.

Every number the summary reports comes from here, summed across ranks step
by step as the steps happen, so nothing is collected a second time at the end.
The ledger is checkpointed with the model, so a resumed run continues its totals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from adacomp_mpi.report.schema import FLOAT32_BYTES

from .metrics import GlobalStep, step_record


@dataclass
class Position:
    """Where training stands: global steps done, current epoch, batches done in it."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass
class Totals:
    """Whole-run aggregates over all ranks."""

    bytes_sent: float = 0.0
    dense_bytes: float = 0.0
    skipped_steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)  # codec counters

    def add(self, summed: GlobalStep, *, bytes_sent: int, dense_bytes: int) -> None:
        self.bytes_sent += bytes_sent
        self.dense_bytes += dense_bytes
        for phase, seconds in summed.seconds.items():
            self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        for kind, counters in summed.by_kind.items():
            running = self.by_kind.setdefault(kind, dict.fromkeys(counters, 0.0))
            for name, value in counters.items():
                running[name] += value


@dataclass
class Ledger:
    """Position and totals of one run, and the step records made from them."""

    numel: int
    world_size: int
    dense_mode: bool
    position: Position = field(default_factory=Position)
    totals: Totals = field(default_factory=Totals)

    @property
    def step(self) -> int:
        return self.position.step

    def record_step(
        self,
        summed: GlobalStep,
        *,
        sizes: tuple[int, ...],
        received: int | None = None,
        lr: float,
        step_seconds: float,
        wall_seconds: float,
    ) -> dict[str, Any]:
        """Add one finished step (already summed over ranks); its metrics record."""
        dense_bytes = FLOAT32_BYTES * self.numel * self.world_size
        self.totals.add(summed, bytes_sent=sum(sizes), dense_bytes=dense_bytes)
        return step_record(
            step=self.step,
            epoch=self.position.epoch,
            lr=lr,
            summed=summed,
            sizes=sizes,
            received=sum(sizes) if received is None else received,
            dense_bytes=dense_bytes,
            cumulative_sent=self.totals.bytes_sent,
            cumulative_dense=self.totals.dense_bytes,
            step_seconds=step_seconds,
            wall_seconds=wall_seconds,
            dense_mode=self.dense_mode,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"position": asdict(self.position), "totals": asdict(self.totals)}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.position = Position(**saved["position"])
        self.totals = Totals(**saved["totals"])
