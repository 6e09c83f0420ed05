"""AdaComp selection for one tensor (Chen et al., AAAI 2018), pure NumPy.

    G = R + dW            accumulated residue
    H = G + dW            self-adjusting look-ahead
    gmax = max |G| per bin of L_T consecutive elements (the last may be shorter)
    send i  iff  |H_i| >= gmax(bin of i)  and gmax > 0  and G_i != 0
    q_i = sign(G_i) * s   for sent i (one scale s per tensor), 0 otherwise
    R = G - q             the unsent remainder carries over

Elements with G_i == 0 are never sent: their sign carries no information and
sending +s would only move mass into the residue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .blocks import BlockPlan, Candidates, Velocity, scan

ScaleRule = Callable[[np.ndarray, np.ndarray], np.float32]


class NonFiniteError(ValueError):
    """G = R + dW has a NaN or an infinity (the residue buffer was not touched)."""


def _mean_abs_sent(sent_abs: np.ndarray, sent_bin_max: np.ndarray) -> np.float32:
    """Least-squares scale for a sign code: mean |G_i| over the sent elements."""
    return np.float32(np.add.reduce(sent_abs, dtype=np.float64) / sent_abs.size)


def _mean_bin_max(sent_abs: np.ndarray, sent_bin_max: np.ndarray) -> np.float32:
    """The paper's alternative: mean of the bin maxima, weighted per sent element."""
    return np.float32(np.add.reduce(sent_bin_max, dtype=np.float64) / sent_bin_max.size)


SCALE_RULES: dict[str, ScaleRule] = {
    "mean_abs": _mean_abs_sent,
    "mean_bin_max": _mean_bin_max,
}


@dataclass(frozen=True)
class Selection:
    """The sent part of one tensor: sorted positions, sign bits, shared scale.

    ``indices`` may be a view of the workspace's buffers: valid until the next
    selection with that workspace (the encoder codes it at once).
    """

    indices: np.ndarray  # int64, strictly increasing
    negative: np.ndarray  # bool, True where q_i = -scale
    scale: np.float32

    @property
    def count(self) -> int:
        return int(self.indices.size)


class Workspace:
    """Scratch buffers, block plans and spare residues, reused every step so
    that a step allocates (and page-faults) nothing big.

    ``spare(index, numel)`` is the second residue buffer of tensor ``index``:
    the encoder writes the new residue there and swaps it in only once every
    tensor turned out finite, so a rejected step leaves the state untouched.
    """

    def __init__(self) -> None:
        self._floats = np.empty(0, np.float32)
        self._mask = np.empty(0, np.bool_)
        self._plans: dict[tuple[int, int], BlockPlan] = {}
        self._spares: dict[int, np.ndarray] = {}
        self.candidates = Candidates()

    def buffers(self, numel: int) -> tuple[np.ndarray, np.ndarray]:
        """A float32 scratch and a bool mask of at least ``numel`` elements
        (the mask rounded up to whole 8-byte words)."""
        if self._floats.size < numel:
            self._floats = np.empty(numel, np.float32)
            self._mask = np.empty(-(-numel // 8) * 8, np.bool_)
        return self._floats, self._mask

    def plan(self, numel: int, bin_size: int) -> BlockPlan:
        key = (numel, bin_size)
        if key not in self._plans:
            self._plans[key] = BlockPlan.build(numel, bin_size)
        return self._plans[key]

    def spare(self, index: int, numel: int) -> np.ndarray:
        buffer = self._spares.get(index)
        if buffer is None or buffer.size != numel:
            buffer = self._spares[index] = np.empty(numel, np.float32)
        return buffer

    def swap(self, index: int, residue: np.ndarray) -> np.ndarray:
        """Hand back the spare (now the new residue); keep ``residue`` as spare."""
        new = self._spares[index]
        self._spares[index] = residue
        return new


def select_positions(
    residue: np.ndarray,
    grad: np.ndarray,
    *,
    bin_size: int,
    workspace: Workspace,
    out: np.ndarray,
    velocity: Velocity | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write G = R + dW into ``out``; AdaComp's sent positions and their G.

    The selection rule alone, without the sign code: the shared-index mode
    (``shared_indices``) sends every rank's own values at these positions.
    With ``velocity`` (momentum correction), dW is the new velocity that the
    scan writes (``blocks.scan``). Both arrays may be views of the workspace's
    buffers. NonFiniteError when
    G holds a NaN or an infinity (``residue`` is only read when ``out`` is
    another buffer).
    """
    plan, found = workspace.plan(residue.size, bin_size), workspace.candidates
    with np.errstate(over="ignore"):  # an overflow to inf is refused just below
        scan(residue, grad, out, plan, workspace.buffers(plan.block), found, velocity)
    if not np.isfinite(np.maximum.reduce(plan.gmax)):
        raise NonFiniteError("the accumulated gradient R + dW is not finite")
    indices, values = found.indices[: found.count], found.values[: found.count]
    if not np.logical_and.reduce(values):  # G == 0: nothing to send
        nonzero = values != 0
        indices, values = indices[nonzero], values[nonzero]
    return indices, values


def select_and_update(
    residue: np.ndarray,
    grad: np.ndarray,
    *,
    bin_size: int,
    scale_rule: str,
    workspace: Workspace,
    out: np.ndarray | None = None,
    velocity: Velocity | None = None,
) -> Selection:
    """Run one AdaComp step: write the new residue G - q into ``out``.

    ``out`` defaults to ``residue`` (in place). With a separate ``out`` the
    residue is only read, so a NonFiniteError (NaN or infinity in G, found in
    the bin maxima at no extra pass) leaves it exactly as it was.
    """
    out = residue if out is None else out
    if residue.size == 0:
        return Selection(np.zeros(0, np.int64), np.zeros(0, np.bool_), np.float32(0))
    indices, values = select_positions(
        residue, grad, bin_size=bin_size, workspace=workspace, out=out, velocity=velocity
    )
    plan = workspace.plan(residue.size, bin_size)
    if indices.size == 0:
        return Selection(indices, np.zeros(0, np.bool_), np.float32(0))
    sent_bin_max = plan.gmax[indices // bin_size] if scale_rule == "mean_bin_max" else values
    magnitudes = np.abs(values)
    scale = SCALE_RULES[scale_rule](magnitudes, sent_bin_max)
    negative = values < 0
    q = signed_scale(negative, scale, out=magnitudes)
    out[indices] = np.subtract(values, q, out=values)  # R = G - q
    return Selection(indices, negative, scale)


def signed_scale(
    negative: np.ndarray, scale: np.float32, *, out: np.ndarray | None = None
) -> np.ndarray:
    """q = -scale where ``negative`` else +scale, as float32 (scale >= 0).

    Built from bits, the sign bit or'ed onto the scale's: 3-4x faster than
    ``copysign`` and 20x faster than ``np.where`` with two scalars.
    """
    bits = None if out is None else out.view(np.uint32)
    bits = np.left_shift(negative.view(np.uint8), 31, dtype=np.uint32, out=bits)
    bits |= np.float32(scale).view(np.uint32)
    return bits.view(np.float32)
