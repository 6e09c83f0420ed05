"""``--tensorboard``: the metrics records as TensorBoard scalars on rank 0.

A sink beside ``metrics.jsonl``: ``TeeMetrics`` hands every record the loop
writes to both, so the scalars are exactly what the JSON lines say. Per step:
loss, learning rate, compression ratio (this step's and the run's so far) and
samples/s; per epoch (and per ``--eval-every`` evaluation): test loss and
accuracy, and the epoch's mean training loss. Needs the ``tensorboard`` package
(``pip install 'adacomp-mpi[tensorboard]'``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from adacomp_mpi.common.errors import UsageError

from .metrics import MetricsWriter

TENSORBOARD_DIR = "tensorboard"  # OUTPUT_DIR/tensorboard
INSTALL_HINT = "pip install 'adacomp-mpi[tensorboard]'"
# record type -> (record field, scalar tag)
SCALARS: dict[str, tuple[tuple[str, str], ...]] = {
    "step": (
        ("loss", "train/loss"),
        ("lr", "train/lr"),
        ("compression_ratio", "compression/ratio"),
        ("cumulative_compression_ratio", "compression/cumulative_ratio"),
        ("samples_per_s", "throughput/samples_per_s"),
    ),
    "epoch": (
        ("train_loss", "epoch/train_loss"),
        ("test_loss", "test/loss"),
        ("test_accuracy", "test/accuracy"),
        ("test_perplexity", "test/perplexity"),
    ),
    "eval": (
        ("test_loss", "eval/test_loss"),
        ("test_accuracy", "eval/test_accuracy"),
        ("test_perplexity", "eval/test_perplexity"),
    ),
}


def missing_reason() -> str | None:
    """None if TensorBoard's writer can be imported, else the one-line error."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as error:
        return f"--tensorboard needs the tensorboard package ({error}): {INSTALL_HINT}"
    return None


class TensorBoardSink:
    """Scalars from metrics records, written under ``directory``."""

    def __init__(self, directory: Path) -> None:
        if reason := missing_reason():
            raise UsageError(reason)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory))

    def write(self, record: dict[str, Any]) -> None:
        step = record.get("step", 0)
        for name, tag in SCALARS.get(record.get("type", ""), ()):
            value = record.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


@dataclass
class TeeMetrics:
    """A MetricsWriter that also hands every record to other sinks (TensorBoard,
    watchers of the loss)."""

    metrics: MetricsWriter
    sinks: list[Sink] = field(default_factory=list)

    def write(self, record: dict[str, Any]) -> None:
        self.metrics.write(record)
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        self.metrics.close()
        while self.sinks:
            self.sinks.pop().close()


def tensorboard_sinks(output_dir: Path, *, enabled: bool) -> list[Sink]:
    """[a TensorBoard writer under OUTPUT_DIR/tensorboard] if ``enabled`` (rank 0
    passes its flag, the other ranks False), else []."""
    return [TensorBoardSink(output_dir / TENSORBOARD_DIR)] if enabled else []
