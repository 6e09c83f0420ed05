"""``--overlap auto``: time the first steps both ways and keep the faster.

Encoding each gradient on a worker thread while backward goes on pays when
backward still has work to do after most gradients are ready (a CNN: 93-98 %
of the encode hidden) and costs when it has not (an MLP, whose first and
largest layer's gradient arrives last: the worker then only adds thread
hand-offs and GIL contention). Which holds depends on the model and the
machine, so the loop measures it: the first steps alternate between the two
modes, and the phase times of the per-step Allreduce, the same numbers on
every rank, pick the faster, so every rank makes the same choice without a
message of its own. Both modes send the same payloads and keep the torch
thread count, so the choice never changes the trajectory (a resumed run may
choose again).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

WARMUP_STEPS = 2  # steps of each mode left uncounted (first touches, allocations)
SAMPLES = 8  # counted steps of each mode


@dataclass
class OverlapTrial:
    """Alternates the two modes step by step until each has ``samples``
    counted steps, then holds the faster one by median step time."""

    warmup: int = WARMUP_STEPS
    samples: int = SAMPLES
    choice: bool | None = None  # None while the trial runs; then True = overlap
    _seconds: dict[bool, list[float]] = field(default_factory=lambda: {False: [], True: []})
    _seen: int = 0

    def next_mode(self) -> bool:
        """Whether the coming step encodes during backward."""
        return self.choice if self.choice is not None else self._seen % 2 == 1

    def observe(self, overlapped: bool, seconds: float) -> bool | None:
        """Count one step's time (the same on every rank); the choice on the
        step that makes it, else None."""
        if self.choice is not None:
            return None
        if self._seen // 2 >= self.warmup:
            self._seconds[overlapped].append(seconds)
        self._seen += 1
        if min(len(times) for times in self._seconds.values()) < self.samples:
            return None
        faster = statistics.median(self._seconds[True]) < statistics.median(self._seconds[False])
        self.choice = faster
        return faster

    def medians(self) -> dict[bool, float]:
        """Median counted step seconds per mode (for the log line)."""
        return {mode: statistics.median(times) for mode, times in self._seconds.items() if times}
