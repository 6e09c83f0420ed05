"""``--precision fp16``: a dynamic loss scale that every rank keeps in step.

float16 activations underflow on small gradients, so the loss is multiplied
by ``value`` before backward and the gradients are divided by it before the
codec: the residues always hold true gradients, whatever the scale does
next. The rule is torch.amp.GradScaler's (halve on an overflow, double after
``growth_interval`` clean steps in a row), but GradScaler decides from the
rank's own gradients, so two ranks could end with different scales. Here an
overflow on any rank voids the step everywhere (the exchange's usual path for
non-finite gradients), and the scale is updated from that same "applied"
flag, which every rank reads from the same collective: the scales never
drift apart, and a checkpoint holds the one value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INITIAL_SCALE = 2.0**16  # GradScaler's defaults
GROWTH_INTERVAL = 2000
MIN_SCALE = 1.0  # an overflow at scale 1 is a real non-finite gradient, not underflow care


@dataclass
class LossScale:
    """The current scale and how many applied steps have passed since it last changed."""

    value: float = INITIAL_SCALE
    growth_interval: int = GROWTH_INTERVAL
    clean_steps: int = 0

    def update(self, *, applied: bool) -> None:
        """After each exchange: halve on a voided step, double after a clean run."""
        if not applied:
            self.value, self.clean_steps = max(MIN_SCALE, self.value / 2), 0
            return
        self.clean_steps += 1
        if self.clean_steps >= self.growth_interval:
            self.value, self.clean_steps = self.value * 2, 0

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "clean_steps": self.clean_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.clean_steps = float(state["value"]), int(state["clean_steps"])
