"""Adam preconditioning before compression, per rank and tensor::

    v = b2 * v + (1 - b2) * g * g            this rank's second moment (g: its gradient)
    u = g / (sqrt(v / (1 - b2 ** t)) + eps)  what the codec accumulates and sends
    m = b1 * m + (1 - b1) * mean_r(decoded)  the optimizer: SGD, momentum = dampening = b1
    w = w - lr * m

Adam applied after averaging sees, for an element held back in the residue
for k steps, nothing for k - 1 steps and then their sum at once: its second
moment grows about k times and its steps shrink about sqrt(k) times, so
AdaComp under Adam trains with a learning rate well below the one asked for.
Dividing by each rank's own sqrt(v) first makes the residue hold Adam-scaled
updates, which are about the same size everywhere, and the optimizer then
applies their mean with Adam's first moment only (docs/CODEC.md, "Adam
preconditioning").

The new second moments go to spare buffers and take over only when the whole
step encoded (``commit``); ``undo`` puts the previous ones back for a step
that some rank voided, so a skipped step leaves v and t as they were.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .specs import TensorSpec


class SecondMoments:
    """One rank's Adam second moment per tensor, its spare, and the step count t."""

    def __init__(self, specs: Sequence[TensorSpec], *, beta2: float, eps: float) -> None:
        self.beta2 = np.float32(beta2)
        self.eps = np.float32(eps)
        self.current = [np.zeros(spec.numel, np.float32) for spec in specs]
        self._spares = [np.zeros(spec.numel, np.float32) for spec in specs]
        self._scaled = [np.zeros(spec.numel, np.float32) for spec in specs]
        self.steps = 0  # committed steps: the bias correction of the next uses t = steps + 1

    def precondition(self, index: int, grad: np.ndarray) -> np.ndarray:
        """u for tensor ``index`` (the current v is only read; the new v goes to
        the spare). The returned buffer is reused by the next step's call."""
        spare, scaled = self._spares[index], self._scaled[index]
        np.multiply(self.current[index], self.beta2, out=spare)
        np.multiply(grad, grad, out=scaled)
        scaled *= np.float32(1.0) - self.beta2
        spare += scaled
        correction = np.float32(1.0 / (1.0 - float(self.beta2) ** (self.steps + 1)))
        np.multiply(spare, correction, out=scaled)
        np.sqrt(scaled, out=scaled)
        scaled += self.eps
        np.divide(grad, scaled, out=scaled)
        return scaled

    def commit(self) -> None:
        """The step encoded: every new second moment takes over, t advances."""
        self.current, self._spares = self._spares, self.current
        self.steps += 1

    def undo(self) -> None:
        """After ``commit``, for a step some rank voided: v and t as before it."""
        self.current, self._spares = self._spares, self.current
        self.steps -= 1
