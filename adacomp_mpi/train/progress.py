"""Live progress on rank 0: a tqdm bar on a terminal when run alone (world size
1), plain flushed log lines otherwise (under mpiexec stdout is a pipe, and in a
SLURM log a bar is noise); nothing with --quiet or on other ranks.

Every report carries the time elapsed and an ETA for the whole run (every
remaining step of every remaining epoch), from this session's mean step rate.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol

from tqdm import tqdm

from adacomp_mpi.common.log import get_logger

LINE_INTERVAL_SECONDS = 10.0  # at most one line per interval, plus one at each epoch's end


class Progress(Protocol):
    def start_epoch(self, epoch: int, *, total: int, done: int = 0) -> None: ...
    def update(self, *, loss: float, samples_per_s: float, ratio: float | None) -> None: ...
    def end_epoch(self) -> None: ...


def _ratio_text(ratio: float | None) -> str:
    return f"{ratio:.1f}x" if ratio else "n/a"


def duration_text(seconds: float) -> str:
    """``12 s``, ``2 min 31 s``, ``1 h 05 min``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


class RunClock:
    """Elapsed time and the whole run's ETA from the steps done this session."""

    def __init__(self, *, total_steps: int, start_step: int = 0) -> None:
        self.total_steps = total_steps
        self.step = self.start_step = start_step
        self.started = time.perf_counter()

    def tick(self) -> None:
        self.step += 1

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self) -> float | None:
        done = self.step - self.start_step
        if done <= 0:
            return None
        return self.elapsed() / done * max(self.total_steps - self.step, 0)

    def eta_text(self) -> str:
        eta = self.eta()
        return "n/a" if eta is None else duration_text(eta)


class BarProgress:
    """One tqdm bar per epoch with loss, throughput, compression, and the run's ETA."""

    def __init__(self, epochs: int, clock: RunClock) -> None:
        self.epochs = epochs
        self.clock = clock
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
        self.clock.tick()
        self.bar.set_postfix(
            loss=f"{loss:.4f}",
            samples_s=f"{samples_per_s:.0f}",
            ratio=_ratio_text(ratio),
            run_eta=self.clock.eta_text(),
            refresh=False,
        )
        self.bar.update(1)

    def end_epoch(self) -> None:
        self.bar.close()


class LogProgress:
    """Plain lines: one when ``interval`` seconds have passed since the last,
    and one at the end of every epoch; each with elapsed time and the run's ETA."""

    def __init__(
        self, epochs: int, clock: RunClock, *, interval: float = LINE_INTERVAL_SECONDS
    ) -> None:
        self.epochs = epochs
        self.clock = clock
        self.interval = interval
        self.epoch = self.total = self.done = 0
        self.last_line = time.perf_counter()

    def start_epoch(self, epoch: int, *, total: int, done: int = 0) -> None:
        self.epoch, self.total, self.done = epoch, total, done

    def update(self, *, loss: float, samples_per_s: float, ratio: float | None) -> None:
        self.done += 1
        self.clock.tick()
        now = time.perf_counter()
        if self.done != self.total and now - self.last_line < self.interval:
            return
        self.last_line = now
        get_logger().info(
            "epoch %d/%d step %d/%d  loss %.4f  %.0f samples/s  ratio %s  elapsed %s  eta %s",
            self.epoch + 1,
            self.epochs,
            self.done,
            self.total,
            loss,
            samples_per_s,
            _ratio_text(ratio),
            duration_text(self.clock.elapsed()),
            self.clock.eta_text(),
        )
        for handler in get_logger().handlers:
            handler.flush()

    def end_epoch(self) -> None:
        return None


class NoProgress:
    def start_epoch(self, epoch: int, *, total: int, done: int = 0) -> None:
        return None

    def update(self, *, loss: float, samples_per_s: float, ratio: float | None) -> None:
        return None

    def end_epoch(self) -> None:
        return None


def make_progress(
    *,
    rank: int,
    quiet: bool,
    epochs: int,
    total_steps: int,
    world_size: int = 1,
    start_step: int = 0,
) -> Progress:
    """Rank 0 only; a bar on a terminal when alone, log lines otherwise.

    ``total_steps``: the run's optimizer steps (all epochs, or --max-steps);
    ``start_step``: those already done (a resumed run)."""
    if rank != 0 or quiet:
        return NoProgress()
    clock = RunClock(total_steps=total_steps, start_step=start_step)
    if world_size == 1 and sys.stdout.isatty():
        return BarProgress(epochs, clock)
    return LogProgress(epochs, clock)
