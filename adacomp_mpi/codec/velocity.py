"""Momentum correction and momentum-factor masking (Lin et al., "Deep Gradient
Compression", ICLR 2018), stated for AdaComp, per rank and tensor::

    u = m * u + c * g      local velocity (g: this rank's gradient, weight decay in it)
    G = R + u,  H = G + u  AdaComp's accumulation and look-ahead, fed u in place of g
    u[sent] = 0            masking: a sent element's momentum starts afresh
    w = w - lr * mean_r(decoded)   plain SGD on the mean (no momentum after averaging)

With momentum applied after averaging (the default optimizer), a gradient held
back in the residue for k steps is applied late and then amplified by momentum
for many more steps; with the velocity accumulated locally, what the residue
delays is already the momentum-weighted update, and masking stops a sent
element's stale velocity from being sent again. A dense record (a small
tensor, a dense warm-up step) carries u unmasked: since momentum is linear,
the mean of the ranks' u is exactly the global heavy-ball velocity, so dense
tensors train as with SGD-momentum.

Masking drops the rest of a sent element's momentum tail, so an element sent
every step moves by lr * g instead of lr * g / (1 - m): on frequently sent
weights it acts as a lower learning rate. Which compressed tensors are masked
is a rule (``MASKING_RULES``); an unmasked one keeps its whole velocity, so its
updates add up to dense heavy-ball SGD's, each delayed by the residue, and a
delay acts as extra momentum. So an unmasked tensor runs at the lower
``unmasked_momentum`` M with c = (1 - M) / (1 - m), which keeps the heavy-ball
step on a steady gradient, c / (1 - M) = 1 / (1 - m) (momentum compensation,
docs/CODEC.md). Masked and dense tensors have m and c = 1.

New velocities are written to spare buffers and take over only when the whole
step encoded (``commit``), so a refused step leaves them as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .blocks import Velocity
from .specs import TensorSpec

# Which compressed tensors masking zeroes where sent (--momentum-masking).
MASKING_RULES: dict[str, Callable[[TensorSpec], bool]] = {
    "all": lambda spec: True,  # DGC's rule
    "recurrent": lambda spec: spec.kind == "recurrent",  # LSTM/GRU weights only
    "none": lambda spec: False,
}


def _rate_kind(spec: TensorSpec, masked: bool, min_bin: int) -> str:
    """Which (m, c) a tensor gets: none where AdaComp bins it finer than
    ``min_bin`` (the optimizer applies its momentum), the compensated pair
    for an unmasked compressed tensor, the asked momentum for the rest
    (masked tensors, dense records: nothing delays those)."""
    if spec.compress and spec.bin_size < min_bin:
        return "none"
    return "unmasked" if spec.compress and not masked else "asked"


class Velocities:
    """One rank's local velocity per tensor, its spare, and what masking zeroed."""

    def __init__(
        self,
        specs: Sequence[TensorSpec],
        momentum: float,
        *,
        min_bin: int = 0,
        masking: str = "all",
        unmasked_momentum: float | None = None,
    ) -> None:
        rule = MASKING_RULES[masking]
        self.masked = [spec.compress and rule(spec) for spec in specs]
        lower = momentum if unmasked_momentum is None else min(unmasked_momentum, momentum)
        by_kind = {
            "none": (np.float32(0.0), np.float32(1.0)),  # u = g: no correction here
            "unmasked": (np.float32(lower), np.float32((1.0 - lower) / (1.0 - momentum))),
            "asked": (np.float32(momentum), np.float32(1.0)),
        }
        rates = [
            by_kind[_rate_kind(spec, masked, min_bin)]
            for spec, masked in zip(specs, self.masked, strict=True)
        ]
        self.momenta = [m for m, _ in rates]
        self.gains = [c for _, c in rates]  # c: the gradient's factor in u = m * u + c * g
        self.current = [np.zeros(spec.numel, np.float32) for spec in specs]
        self._spares = [np.zeros(spec.numel, np.float32) for spec in specs]
        # Per tensor: (positions, values before masking) of the last sparse record,
        # None for a dense record; what ``undo`` needs after a void step.
        self._masked: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(specs)

    def advance(self, index: int, grad: np.ndarray) -> np.ndarray:
        """u_new = m * u + c * g into the spare (the current u is only read);
        returned for the encoder, which sends it in place of g."""
        spare, gain = self._spares[index], self.gains[index]
        np.multiply(self.current[index], self.momenta[index], out=spare)
        np.add(spare, grad if gain == 1 else grad * gain, out=spare)
        self._masked[index] = None
        return spare

    def deferred(self, index: int) -> Velocity:
        """(u, the spare, m, c): for the AdaComp scan, which writes u_new =
        m * u + c * g into the spare block by block (``blocks.scan``), the same
        floats as ``advance`` without its passes over the tensor."""
        self._masked[index] = None
        current, spare = self.current[index], self._spares[index]
        return current, spare, self.momenta[index], self.gains[index]

    def mask(self, index: int, positions: np.ndarray) -> None:
        """Momentum-factor masking: zero u_new where the sparse record sent
        (nowhere for an unmasked tensor; ``undo`` then keeps u_new as it is)."""
        spare = self._spares[index]
        if not self.masked[index]:
            positions = positions[:0]
        self._masked[index] = (positions.copy(), spare[positions])
        spare[positions] = 0

    def commit(self) -> None:
        """The step encoded: every new velocity takes over (the old one stays as spare)."""
        self.current, self._spares = self._spares, self.current

    def undo(self) -> None:
        """After ``commit``, for a step some rank voided: a tensor this rank sent
        sparsely keeps u_new unmasked (its residue got back what it sent: as if
        nothing had been sent); a dense record's velocity goes back to the one
        before the step (its gradient is dropped, like every dense tensor's)."""
        for index, masked in enumerate(self._masked):
            if masked is None:
                self.current[index], self._spares[index] = (
                    self._spares[index],
                    self.current[index],
                )
            else:
                positions, values = masked
                self.current[index][positions] = values
            self._masked[index] = None
