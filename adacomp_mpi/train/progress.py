"""Live progress on rank 0: a tqdm bar on a terminal, periodic log lines when
stdout is a file (SLURM logs), nothing with --quiet or on other ranks."""

from __future__ import annotations

import sys
import time
from typing import Protocol

from tqdm import tqdm

from adacomp_mpi.common.log import get_logger

LOG_LINES_PER_EPOCH = 10


class Progress(Protocol):
    def start_epoch(self, epoch: int, *, total: int, done: int = 0) -> None: ...
    def update(self, *, loss: float, samples_per_s: float, ratio: float | None) -> None: ...
    def end_epoch(self) -> None: ...


def _ratio_text(ratio: float | None) -> str:
    return f"{ratio:.1f}x" if ratio else "n/a"


class BarProgress:
    """One tqdm bar per epoch with loss, throughput, compression so far and ETA."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.bar: tqdm | None = None

    def start_epoch(self, epoch: int, *, total: int, done: int = 0) -> None:
        self.bar = tqdm(
            total=total,
            initial=done,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            file=sys.stdout,
            dynamic_ncols=True,
            unit="step",
        )

    def update(self, *, loss: float, samples_per_s: float, ratio: float | None) -> None:
        self.bar.set_postfix(
            loss=f"{loss:.4f}",
            samples_s=f"{samples_per_s:.0f}",
            ratio=_ratio_text(ratio),
            refresh=False,
        )
        self.bar.update(1)

    def end_epoch(self) -> None:
        self.bar.close()


class LogProgress:
    """Plain lines, about ten per epoch, each with an ETA for the epoch."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.epoch = self.total = self.done = self.every = 0
        self.started = time.perf_counter()
        self.first = 0

    def start_epoch(self, epoch: int, *, total: int, done: int = 0) -> None:
        self.epoch, self.total, self.done, self.first = epoch, total, done, done
        self.every = max(1, total // LOG_LINES_PER_EPOCH)
        self.started = time.perf_counter()

    def update(self, *, loss: float, samples_per_s: float, ratio: float | None) -> None:
        self.done += 1
        if self.done % self.every and self.done != self.total:
            return
        elapsed = time.perf_counter() - self.started
        eta = elapsed / max(self.done - self.first, 1) * (self.total - self.done)
        get_logger().info(
            "epoch %d/%d step %d/%d  loss %.4f  %.0f samples/s  ratio %s  eta %.0f s",
            self.epoch + 1,
            self.epochs,
            self.done,
            self.total,
            loss,
            samples_per_s,
            _ratio_text(ratio),
            eta,
        )

    def end_epoch(self) -> None:
        return None


class NoProgress:
    def start_epoch(self, epoch: int, *, total: int, done: int = 0) -> None:
        return None

    def update(self, *, loss: float, samples_per_s: float, ratio: float | None) -> None:
        return None

    def end_epoch(self) -> None:
        return None


def make_progress(*, rank: int, quiet: bool, epochs: int) -> Progress:
    """Rank 0 only; a bar on a terminal, log lines otherwise."""
    if rank != 0 or quiet:
        return NoProgress()
    return BarProgress(epochs) if sys.stdout.isatty() else LogProgress(epochs)
