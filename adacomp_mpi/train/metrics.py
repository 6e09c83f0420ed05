"""Per-step metrics: one small Allreduce per step gives cross-rank aggregates,
rank 0 writes them to ``metrics.jsonl`` (schema in docs/METRICS.md).

The same Allreduce carries the "stop requested" flag, so a preemption signal
that reaches any rank stops every rank at the same step boundary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from adacomp_mpi.codec.counters import KIND_FIELDS, KindCounters, StepCounts
from adacomp_mpi.common.files import atomic_write_bytes
from adacomp_mpi.dist.communicator import Communicator
from adacomp_mpi.report.runs import read_records
from adacomp_mpi.report.schema import FLOAT32_BYTES, TIME_PHASES, ratio


@dataclass
class LocalStep:
    """What one rank measured during one step."""

    loss_sum: float
    count: int
    seconds: dict[str, float]
    counts: StepCounts
    stop_requested: bool = False
    interrupted: bool = False
    out_of_time: bool = False  # rank 0's clock passed --time-limit


@dataclass(frozen=True)
class GlobalStep:
    """The same step summed over all ranks."""

    loss: float
    samples: int
    seconds: dict[str, float]  # mean over ranks
    by_kind: dict[str, dict[str, float]]
    stop_requested: bool
    interrupted: bool
    out_of_time: bool


def reduce_step(comm: Communicator, local: LocalStep, kinds: list[str]) -> GlobalStep:
    """Collective: sum this step's measurements over every rank."""
    empty = KindCounters()
    flags = (local.stop_requested, local.interrupted, local.out_of_time)
    values = [local.loss_sum, local.count, *map(float, flags)]
    values += [local.seconds.get(phase, 0.0) for phase in TIME_PHASES]
    for kind in kinds:
        counters = local.counts.get(kind, empty)
        values += [float(getattr(counters, f)) for f in KIND_FIELDS]
    summed = np.asarray(values, np.float64)
    comm.allreduce_sum(summed)
    loss_sum, count, stop, interrupted, out_of_time = summed[:5]
    phases = summed[5 : 5 + len(TIME_PHASES)] / comm.size
    per_kind = summed[5 + len(TIME_PHASES) :].reshape(len(kinds), len(KIND_FIELDS))
    return GlobalStep(
        loss=loss_sum / max(count, 1),
        samples=int(count),
        seconds=dict(zip(TIME_PHASES, phases.tolist(), strict=True)),
        by_kind={
            k: dict(zip(KIND_FIELDS, row.tolist(), strict=True))
            for k, row in zip(kinds, per_kind, strict=True)
        },
        stop_requested=stop > 0,
        interrupted=interrupted > 0,
        out_of_time=out_of_time > 0,
    )


def _records_up_to(path: Path, step: int) -> bytes:
    """The lines of an earlier session that a resume from ``step`` keeps."""
    kept = [r for r in read_records(path) if r.get("step", 0) <= step]
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode()


@dataclass
class MetricsWriter:
    """JSON lines on rank 0 (other ranks hold no file), flushed line by line.

    A fresh run starts the file anew; a resumed run keeps the earlier
    session's records up to the checkpoint's step and appends after them.
    """

    path: Path | None
    resume_step: int | None = None
    _handle: IO[str] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.path is None:
            return
        kept = b"" if self.resume_step is None else _records_up_to(self.path, self.resume_step)
        atomic_write_bytes(self.path, kept)
        self._handle = self.path.open("a", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is not None:
            self._handle.write(json.dumps(record, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def kind_ratios(
    by_kind: dict[str, dict[str, float]], *, dense_mode: bool
) -> dict[str, float | None]:
    """Per layer kind: dense float32 bytes / record bytes sent."""
    if dense_mode:
        return {kind: 1.0 for kind in by_kind}
    return {k: ratio(FLOAT32_BYTES * c["elements"], c["record_bytes"]) for k, c in by_kind.items()}


def codec_rates(
    by_kind: dict[str, dict[str, float]], *, dense_mode: bool
) -> dict[str, float | None]:
    """Density (elements sent / encoded) and bits per sent element."""
    if dense_mode:
        return {"density": 1.0, "bits_per_sent_element": None}
    totals = {f: sum(c[f] for c in by_kind.values()) for f in KIND_FIELDS}
    return {
        "density": totals["sent"] / totals["elements"] if totals["elements"] else None,
        "bits_per_sent_element": (
            8 * totals["coded_bytes"] / totals["coded_sent"] if totals["coded_sent"] else None
        ),
    }


def step_record(
    *,
    step: int,
    epoch: int,
    lr: float,
    summed: GlobalStep,
    sizes: tuple[int, ...],
    received: int,
    dense_bytes: int,
    cumulative_sent: float,
    cumulative_dense: float,
    step_seconds: float,
    wall_seconds: float,
    dense_mode: bool,
) -> dict[str, Any]:
    """One line of metrics.jsonl (documented in docs/METRICS.md)."""
    return {
        "type": "step",
        "step": step,
        "epoch": epoch,
        "lr": lr,
        "loss": summed.loss,
        "samples": summed.samples,
        "samples_per_s": summed.samples / step_seconds if step_seconds > 0 else None,
        "bytes_sent": sum(sizes),
        "bytes_sent_max_rank": max(sizes),
        "bytes_received_per_rank": received,
        "dense_bytes": dense_bytes,
        "compression_ratio": ratio(dense_bytes, sum(sizes)),
        "cumulative_compression_ratio": ratio(cumulative_dense, cumulative_sent),
        "compression_ratio_by_kind": kind_ratios(summed.by_kind, dense_mode=dense_mode),
        **codec_rates(summed.by_kind, dense_mode=dense_mode),
        "time": summed.seconds,
        "wall_seconds": wall_seconds,
    }
