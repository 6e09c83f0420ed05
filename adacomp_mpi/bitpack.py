"""Vectorised packing of fixed-width unsigned words and unary codes into bytes.

Bit order is most-significant first within a word and within a byte
(NumPy's ``packbits`` default), and streams are padded with zero bits.
"""

from __future__ import annotations

import numpy as np


def packed_nbytes(nbits: int) -> int:
    return (nbits + 7) // 8


def pack_words(values: np.ndarray, width: int) -> np.ndarray:
    """Pack each value's low ``width`` bits; returns ceil(n*width/8) bytes."""
    if width == 0 or values.size == 0:
        return np.zeros(0, np.uint8)
    # Big-endian bytes of each value, unpacked to bits: 8 bits per word byte
    # instead of one uint64 per bit, then the low ``width`` bits are kept.
    # Contiguous copies before each (un)packbits: both are slow on strided rows.
    nbytes = (width + 7) // 8
    big_endian = values.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - nbytes :]
    bits = np.unpackbits(np.ascontiguousarray(big_endian)).reshape(-1, 8 * nbytes)
    return np.packbits(np.ascontiguousarray(bits[:, 8 * nbytes - width :]))


def unpack_words(data: np.ndarray, count: int, width: int) -> np.ndarray:
    """Inverse of ``pack_words`` for ``count`` words (int64 values)."""
    if width == 0 or count == 0:
        return np.zeros(count, np.int64)
    bits = np.unpackbits(data, count=count * width).reshape(count, width)
    weights = np.left_shift(np.int64(1), np.arange(width - 1, -1, -1, dtype=np.int64))
    return bits.astype(np.int64) @ weights


def pack_bits(flags: np.ndarray) -> np.ndarray:
    """One bit per boolean."""
    return np.packbits(flags.astype(np.uint8, copy=False))


def unpack_bits(data: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(data, count=count).astype(np.bool_)


def pack_unary(quotients: np.ndarray) -> tuple[np.ndarray, int]:
    """q zero bits then a one bit per value; returns (bytes, total bits)."""
    ends = np.cumsum(quotients.astype(np.int64) + 1) - 1
    nbits = int(ends[-1]) + 1 if ends.size else 0
    bits = np.zeros(nbits, np.uint8)
    bits[ends] = 1
    return np.packbits(bits), nbits


def unpack_unary(data: np.ndarray, nbits: int) -> np.ndarray:
    """Inverse of ``pack_unary``: the quotient before every one bit."""
    ends = np.flatnonzero(np.unpackbits(data, count=nbits))
    return np.diff(ends, prepend=-1) - 1
