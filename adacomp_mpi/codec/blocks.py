"""The cache-blocked pass of AdaComp selection: G, bin maxima, candidates.

One tensor is walked in blocks of whole bins; the element-wise passes of a
block (G = R + dW, |G|, bin maxima, |H|, |H| >= gmax, candidate positions)
run while it sits in the CPU cache, so a 10M-element tensor is read from
memory once. The loop is the codec's hot spot: per block it makes a dozen
NumPy calls on views prepared once per tensor (``BlockPlan``), and keeps
call overhead, temporaries and branch mispredictions down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Elements per block. Bigger blocks make fewer NumPy calls (each ~1 us) but
# spill the block's four float32 arrays out of the 1-2 MB per-core cache.
BLOCK_ELEMENTS = 1 << 17

# Masks shorter than this are scanned with one plain ``nonzero`` (``_positions``).
WORD_SCAN_MIN = 1 << 15

# The bits of the smallest positive float32. Raising gmax to it changes no
# bin with gmax > 0, and makes an all-zero bin a candidate only where H != 0;
# those candidates have G == 0 and are dropped, so zero bins send nothing.
TINY_BITS = np.array(1, np.uint32)


@dataclass
class BlockPlan:
    """Per-(numel, L_T) constants of the blocked loop, built once and reused."""

    numel: int
    bin_size: int
    block: int  # elements per block, whole bins
    starts: np.ndarray  # intp bin offsets within a full block, for reduceat
    gmax: np.ndarray  # float32, one per bin of the tensor (overwritten each step)
    bounds: list[tuple[int, int, int, int]] = field(default_factory=list)  # blocks

    @classmethod
    def build(cls, numel: int, bin_size: int) -> BlockPlan:
        block = max(bin_size, BLOCK_ELEMENTS // bin_size * bin_size)
        starts = np.arange(0, block, bin_size, dtype=np.intp)
        gmax = np.empty(-(-numel // bin_size), np.float32)
        return cls(numel, bin_size, block, starts, gmax, _bounds(numel, bin_size, block))


def _bounds(numel: int, bin_size: int, block: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, first bin, end bin) of every block."""
    bounds = []
    for start in range(0, numel, block):
        stop = min(start + block, numel)
        bounds.append((start, stop, start // bin_size, -(-stop // bin_size)))
    return bounds


def _mark(lookahead: np.ndarray, gmax: np.ndarray, bin_size: int, mask: np.ndarray) -> None:
    """mask = |H| >= gmax of its bin, for any block (the tensor's last bin may be short)."""
    full = lookahead.size // bin_size * bin_size
    rows = full // bin_size
    np.greater_equal(
        lookahead[:full].reshape(rows, bin_size),
        gmax[:rows, None],
        out=mask[:full].reshape(rows, bin_size),
    )
    if full < lookahead.size:
        np.greater_equal(lookahead[full:], gmax[rows], out=mask[full : lookahead.size])


def _positions(mask: np.ndarray, size: int) -> np.ndarray:
    """The positions of the True elements of ``mask[:size]``, ascending.

    NumPy's boolean ``nonzero`` branches per element below about 10% density
    and mispredicts on every candidate (about 1 ns per element at the 7% of
    L_T = 50). So the mask is scanned as uint64 words first (n/8 of them, many
    more nonzero), then only the bytes of the nonzero words: 10-20% faster in
    the encoder at 0.1-1.5% candidates, 25% at 7%. Below ``WORD_SCAN_MIN``
    elements (a small tensor: one short block) the word scan's eight NumPy
    calls cost more than the mispredictions, and one ``nonzero`` is 2-10x faster.
    """
    if size < WORD_SCAN_MIN:
        return mask[:size].nonzero()[0]
    padded = -(-size // 8) * 8
    mask[size:padded] = False
    words = mask[:padded].view(np.uint64)
    nonzero_words = (words != 0).nonzero()[0]
    within = words.take(nonzero_words).view(np.bool_).nonzero()[0]
    word_start = nonzero_words.take(within >> 3)
    word_start <<= 3
    within &= 7
    within |= word_start
    return within


class Candidates:
    """Growable candidate positions (int64) and their G (float32), reused
    from step to step: no per-block lists, no concatenation at the end."""

    def __init__(self) -> None:
        self.indices = np.empty(0, np.int64)
        self.values = np.empty(0, np.float32)
        self.count = 0

    def _reserve(self, extra: int) -> None:
        if self.count + extra > self.indices.size:
            size = max(2 * self.indices.size, self.count + extra, 1024)
            indices, values = np.empty(size, np.int64), np.empty(size, np.float32)
            indices[: self.count] = self.indices[: self.count]
            values[: self.count] = self.values[: self.count]
            self.indices, self.values = indices, values

    def append(self, positions: np.ndarray, start: int, accumulated: np.ndarray) -> None:
        """Add one block's positions (relative to ``start``) and gather their G."""
        count = positions.size
        self._reserve(count)
        end = self.count + count
        np.add(positions, start, out=self.indices[self.count : end])
        accumulated.take(positions, out=self.values[self.count : end], mode="clip")
        self.count = end


# Momentum correction folded into the scan: (previous u, new u, momentum m,
# gain c). The block's new u = m * u + c * g is then made while the block is
# in cache, instead of in passes over the whole tensor before the scan reads it.
Velocity = tuple[np.ndarray, np.ndarray, np.float32, np.float32]


def scan(
    residue: np.ndarray,
    grad: np.ndarray,
    out: np.ndarray,
    plan: BlockPlan,
    buffers: tuple[np.ndarray, np.ndarray],
    found: Candidates,
    velocity: Velocity | None = None,
) -> None:
    """Write G = R + dW into ``out``, fill ``plan.gmax``, and collect the
    candidates (|H| >= gmax) with their G into ``found``.

    With ``velocity``, dW is the new velocity m * u + c * g, written into its
    buffer block by block (the same floats as computing it first).
    The candidates' G is gathered while the block is still in cache: after the
    loop, a gather from a 10M-element ``out`` would read it from memory again.
    A NaN or infinity in G makes ``plan.gmax`` NaN or infinite.
    """
    scratch, mask = buffers
    bin_size, gmax_rows = plan.bin_size, plan.gmax[:, None]
    # Bin maxima of |G| on the uint32 bits: for floats without a sign bit the
    # integer order is the float order (+inf and NaN at the top, so NaN still
    # shows), and integer reduceat is 1.5-2x faster than the float one.
    abs_bits, gmax_bits = scratch.view(np.uint32), plan.gmax.view(np.uint32)
    rows = plan.block // bin_size
    full_work = scratch[: plan.block].reshape(rows, bin_size)
    full_mask = mask[: plan.block].reshape(rows, bin_size)
    found.count = 0
    for start, stop, first_bin, end_bin in plan.bounds:
        size = stop - start
        dw, work, gmax = grad[start:stop], scratch[:size], gmax_bits[first_bin:end_bin]
        if velocity is not None:
            previous, new, momentum, gain = velocity
            if gain != 1:  # c * g into the scratch, free until |G| below
                dw = np.multiply(dw, gain, work)
            new_u = np.multiply(previous[start:stop], momentum, new[start:stop])
            dw = np.add(new_u, dw, new_u)
        accumulated = np.add(residue[start:stop], dw, out[start:stop])  # G
        np.abs(accumulated, work)
        np.maximum.reduceat(abs_bits[:size], plan.starts[: gmax.size], 0, None, gmax)
        np.maximum(gmax, TINY_BITS, out=gmax)  # a NaN stays NaN
        np.abs(np.add(accumulated, dw, work), work)  # |H|
        if size == plan.block:
            np.greater_equal(full_work, gmax_rows[first_bin:end_bin], full_mask)
        else:
            _mark(work, plan.gmax[first_bin:end_bin], bin_size, mask)
        found.append(_positions(mask, size), start, accumulated)
