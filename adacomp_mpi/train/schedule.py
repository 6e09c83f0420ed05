"""Learning-rate schedules: the factor on the base learning rate at each step.

A pure function of the step, so every rank computes the same rate and a
resumed run continues the schedule exactly. Linear warm-up from 0 over
``--lr-warmup-steps``, then the schedule over the remaining steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """How the learning rate moves over ``total`` optimizer steps."""

    name: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 1
    step_every: int = 0  # "step": decay every this many steps (0: at 1/2 and 3/4 of the run)
    gamma: float = 0.1  # "step": the decay factor

    def factor(self, step: int) -> float:
        """Multiplier on the base rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        after = step - self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        return SCHEDULES[self.name](self, after, span)


def _constant(schedule: Schedule, after: int, span: int) -> float:
    return 1.0


def _step(schedule: Schedule, after: int, span: int) -> float:
    if schedule.step_every > 0:
        return schedule.gamma ** (after // schedule.step_every)
    milestones = (span // 2, (3 * span) // 4)
    return schedule.gamma ** sum(after >= m for m in milestones)


def _cosine(schedule: Schedule, after: int, span: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(after, span) / span))


SCHEDULES: dict[str, Callable[[Schedule, int, int], float]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
}


BIN_WARMUP_STAGES = 3  # L_T / 8, / 4, / 2, a third of the warm-up each, then L_T


def bin_divisor(step: int, warmup_steps: int) -> int:
    """The compression warm-up's divisor of AdaComp's L_T at optimizer step
    ``step`` (0-based): more elements sent while the model moves fastest, as in
    DGC's exponentially decaying density; a function of the step alone, like the
    learning rate, so a resumed run continues the ramp exactly."""
    if step >= warmup_steps:
        return 1
    return 2 ** (BIN_WARMUP_STAGES - step * BIN_WARMUP_STAGES // warmup_steps)
