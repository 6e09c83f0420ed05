"""Position coding for the sent elements of one tensor.

Positions are coded as gaps (zeros skipped since the previous sent element)
plus one sign bit each. Two codes, chosen per tensor by exact size:

* ``fixed``  — ``w``-bit gap words; the all-ones word is an escape meaning
  "skip 2**w - 1 more positions". With ``w = ceil(log2 L_T)`` this is the
  paper's fixed word: w + 1 bits per sent element while gaps stay below
  2**w - 1 (true with a sent element in every half bin). One per bin only
  bounds gaps by 2 L_T - 2, so width w + 1 is always tried: at most w + 2.
* ``rice``   — Golomb-Rice: gap >> b in unary, then the low ``b`` bits;
  close to log2(1/density) + 2 bits per element whatever the density.

The unary parts, remainders and signs are separate bit streams, so both
encode and decode stay vectorised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import bitpack
from .errors import PayloadError

FIXED, RICE = 1, 2
MAX_WIDTH = 32


@dataclass(frozen=True)
class CodedIndices:
    """A coded position stream: method, its parameter, aux count, the bytes."""

    method: int
    param: int
    aux: int  # escape words (fixed) or unary bits (rice)
    data: np.ndarray  # uint8


def gaps_of(indices: np.ndarray) -> np.ndarray:
    """Unsent positions before each sent one (the first counted from -1)."""
    gaps = np.empty_like(indices)
    gaps[0] = indices[0]
    np.subtract(indices[1:], indices[:-1], out=gaps[1:])
    gaps[1:] -= 1
    return gaps


def fixed_nbytes(count: int, width: int, escapes: int) -> int:
    return bitpack.packed_nbytes((count + escapes) * width) + bitpack.packed_nbytes(count)


def rice_nbytes(count: int, param: int, unary_bits: int) -> int:
    return (
        bitpack.packed_nbytes(unary_bits)
        + bitpack.packed_nbytes(count * param)
        + bitpack.packed_nbytes(count)
    )


def _escaped_words(gaps: np.ndarray, escape: int) -> np.ndarray:
    """Each gap as escape words (one per ``escape`` skipped) then its remainder."""
    skips = gaps // escape
    words = np.full(gaps.size + int(np.add.reduce(skips)), escape, np.int64)
    words[np.cumsum(skips + 1) - 1] = gaps % escape
    return words


def _encode_fixed(gaps: np.ndarray, negative: np.ndarray, width: int) -> CodedIndices:
    escape = (1 << width) - 1
    words = gaps if int(np.maximum.reduce(gaps)) < escape else _escaped_words(gaps, escape)
    total = words.size
    data = np.concatenate([bitpack.pack_words(words, width), bitpack.pack_bits(negative)])
    return CodedIndices(FIXED, width, total - gaps.size, data)


def _encode_rice(gaps: np.ndarray, negative: np.ndarray, param: int) -> CodedIndices:
    unary, nbits = bitpack.pack_unary(gaps >> param, overwrite=True)
    remainders = bitpack.pack_words(gaps, param)  # the low ``param`` bits
    data = np.concatenate([unary, remainders, bitpack.pack_bits(negative)])
    return CodedIndices(RICE, param, nbits, data)


class _GapTotals:
    """Exact sums of floor(gap / d) over all gaps, for the divisors the
    candidate codes need (2**w - 1: escape words; 2**b: unary bits).

    Each gap g contributes #{j >= 1 : j * d <= g}, so the sum is
    sum_j #{gaps >= j * d}: with the tail counts of a histogram (the number of
    gaps >= v, for every v up to ``CAP``) each divisor costs one strided read
    of them, whatever the number of gaps. The rare gaps beyond ``CAP`` (long
    runs of unsent bins) add their own quotients past ``CAP``.
    """

    CAP = 4096

    def __init__(self, gaps: np.ndarray) -> None:
        self.largest = int(np.maximum.reduce(gaps))
        capped = gaps if self.largest < self.CAP else np.minimum(gaps, self.CAP)
        counts = np.bincount(capped)
        self.tail = np.cumsum(counts[::-1])[::-1]  # tail[v] = #gaps >= v (v <= CAP)
        self.large = gaps[capped == self.CAP] if self.largest >= self.CAP else None

    def totals(self, divisors: list[int]) -> list[int]:
        """Sum over all gaps of ``gap // d``, for each divisor d >= 1 (exact ints)."""
        sums = [int(np.add.reduce(self.tail[d::d])) for d in divisors]
        if self.large is not None:  # j * d beyond CAP: only these gaps reach it
            for i, d in enumerate(divisors):
                beyond = np.floor_divide(self.large, d) - self.CAP // d
                sums[i] += int(np.add.reduce(beyond))
        return sums


def _candidates(indices: np.ndarray, gaps: np.ndarray, bin_size: int) -> list[tuple[int, int, int]]:
    """(nbytes, method, param) for the parameters worth trying."""
    count = gaps.size
    totals = _GapTotals(gaps)
    gap_sum = int(indices[-1]) + 1 - count  # the sum of all gaps, exactly
    centre = max(int(math.log2(gap_sum / count + 1)), 0)
    paper_width = max((bin_size - 1).bit_length(), 1)  # ceil(log2 L_T)
    spread = (*range(centre - 1, centre + 3), paper_width, paper_width + 1)
    widths = sorted({w for w in spread if 1 <= w <= MAX_WIDTH})
    escaping = [w for w in widths if (1 << w) - 1 <= totals.largest]  # the rest escape nothing
    params = sorted({b for b in range(centre - 2, centre + 1) if 0 <= b < MAX_WIDTH})
    escapes = dict(zip(escaping, totals.totals([(1 << w) - 1 for w in escaping]), strict=True))
    unary = totals.totals([1 << b for b in params])
    options = [(fixed_nbytes(count, w, escapes.get(w, 0)), FIXED, w) for w in widths]
    options += [
        (rice_nbytes(count, b, u + count), RICE, b) for b, u in zip(params, unary, strict=True)
    ]
    return options


ENCODERS: dict[int, Callable[[np.ndarray, np.ndarray, int], CodedIndices]] = {
    FIXED: _encode_fixed,
    RICE: _encode_rice,
}
METHOD_NAMES: dict[str, tuple[int, ...]] = {
    "auto": (FIXED, RICE),
    "fixed": (FIXED,),
    "rice": (RICE,),
}


def encode_indices(
    indices: np.ndarray, negative: np.ndarray, *, bin_size: int, methods: tuple[int, ...]
) -> CodedIndices:
    """Code sorted positions and signs with the smallest allowed method."""
    if indices.size == 0:
        return CodedIndices(FIXED, 1, 0, np.zeros(0, np.uint8))
    gaps = gaps_of(indices)
    _, method, param = min(c for c in _candidates(indices, gaps, bin_size) if c[1] in methods)
    return ENCODERS[method](gaps, negative, param)


def coded_nbytes(method: int, param: int, count: int, aux: int) -> int:
    """Byte length implied by a record header; PayloadError if impossible."""
    if count == 0 and aux:
        raise PayloadError(f"index stream has {aux} escape words or unary bits but no elements")
    if method == FIXED and 1 <= param <= MAX_WIDTH:
        return fixed_nbytes(count, param, aux)
    if method == RICE and 0 <= param < MAX_WIDTH:
        if aux < count:
            raise PayloadError(f"rice stream has {aux} unary bits for {count} elements")
        return rice_nbytes(count, param, aux)
    raise PayloadError(f"unknown index coding {method} with parameter {param}")


def _decode_fixed_gaps(data: np.ndarray, count: int, width: int, escapes: int) -> np.ndarray:
    escape = (1 << width) - 1
    words = bitpack.unpack_words(data, count + escapes, width)
    if not escapes:  # the usual case: every word is a gap
        if (words == escape).any():
            raise PayloadError("fixed-width index stream does not match its element count")
        return words
    is_data = words != escape
    data_pos = np.flatnonzero(is_data)
    if data_pos.size != count or (count and data_pos[-1] != words.size - 1):
        raise PayloadError("fixed-width index stream does not match its element count")
    skipped = np.diff(data_pos, prepend=-1) - 1
    return words[data_pos] + skipped * escape


def _decode_rice_gaps(data: np.ndarray, count: int, param: int, unary_bits: int) -> np.ndarray:
    unary_bytes = bitpack.packed_nbytes(unary_bits)
    quotients = bitpack.unpack_unary(data[:unary_bytes], unary_bits)
    if quotients.size != count or (
        unary_bits and not data[unary_bytes - 1] & _last_bit(unary_bits)
    ):
        raise PayloadError("rice unary stream does not match its element count")
    remainders = bitpack.unpack_words(data[unary_bytes:], count, param)
    quotients <<= param
    quotients |= remainders
    return quotients


def _last_bit(nbits: int) -> int:
    """Mask of the final stream bit within its byte (MSB-first)."""
    return 1 << (7 - (nbits - 1) % 8)


GAP_DECODERS: dict[int, Callable[[np.ndarray, int, int, int], np.ndarray]] = {
    FIXED: _decode_fixed_gaps,
    RICE: _decode_rice_gaps,
}


def decode_indices(coded: CodedIndices, *, count: int, numel: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (int64, strictly increasing, < numel) and sign bits."""
    if count == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.bool_)
    indices = GAP_DECODERS[coded.method](coded.data, count, coded.param, coded.aux)
    indices += 1  # in place: gaps + 1, summed, minus 1
    np.cumsum(indices, out=indices)
    indices -= 1
    if indices[-1] >= numel:
        raise PayloadError(f"index {int(indices[-1])} out of range for {numel} elements")
    negative = bitpack.unpack_bits(coded.data[-bitpack.packed_nbytes(count) :], count)
    return indices, negative
