"""Bit packing against a plain bit-string reference (MSB first, zero padded)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adacomp_mpi.codec.bitpack import (
    SWAR_MIN_WORDS,
    pack_bits,
    pack_unary,
    pack_words,
    packed_nbytes,
    unpack_bits,
    unpack_unary,
    unpack_words,
)

SETTINGS = settings(max_examples=100, deadline=None)


def reference_bytes(bits: str) -> bytes:
    """'0110...' -> bytes, MSB first, last byte padded with zero bits."""
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


@SETTINGS
@given(
    width=st.integers(0, 40),
    values=st.lists(st.integers(0, 2**48 - 1), max_size=300),
    junk=st.binary(max_size=3),
)
def test_pack_words_matches_reference(width: int, values: list[int], junk: bytes) -> None:
    array = np.array(values, np.int64)
    bits = "".join(format(v & ((1 << width) - 1), f"0{width}b") for v in values) if width else ""
    packed = pack_words(array, width)
    assert packed.dtype == np.uint8
    assert packed.tobytes() == reference_bytes(bits)
    assert packed.size == packed_nbytes(len(values) * width)
    # trailing bytes after the stream are ignored by the unpacker
    stream = np.concatenate([packed, np.frombuffer(junk, np.uint8)])
    low = [v & ((1 << width) - 1) for v in values] if width else [0] * len(values)
    assert unpack_words(stream, len(values), width).tolist() == low


@pytest.mark.parametrize("width", range(1, 17))
def test_swar_paths_match_reference_above_their_threshold(width: int) -> None:
    """Streams of SWAR_MIN_WORDS words and more take the SWAR paths (the
    hypothesis test above, with shorter lists, takes the bit-matrix path)."""
    rng = np.random.default_rng(width)
    for count in (SWAR_MIN_WORDS, SWAR_MIN_WORDS + 7, 3 * SWAR_MIN_WORDS + 1):
        values = rng.integers(0, 2**40, count)
        bits = "".join(format(int(v) & ((1 << width) - 1), f"0{width}b") for v in values)
        packed = pack_words(values, width)
        assert packed.tobytes() == reference_bytes(bits)
        assert unpack_words(packed, count, width).tolist() == [
            int(v) & ((1 << width) - 1) for v in values
        ]


@SETTINGS
@given(quotients=st.lists(st.integers(0, 70), max_size=200))
def test_unary_matches_reference(quotients: list[int]) -> None:
    bits = "".join("0" * q + "1" for q in quotients)
    packed, nbits = pack_unary(np.array(quotients, np.int64))
    assert nbits == len(bits)
    assert packed.tobytes() == reference_bytes(bits)
    assert unpack_unary(packed, nbits).tolist() == quotients


@SETTINGS
@given(flags=st.lists(st.booleans(), max_size=200))
def test_sign_bits_match_reference(flags: list[bool]) -> None:
    bits = "".join("1" if f else "0" for f in flags)
    packed = pack_bits(np.array(flags, np.bool_))
    assert packed.tobytes() == reference_bytes(bits)
    assert unpack_bits(packed, len(flags)).tolist() == flags


def test_widest_words() -> None:
    values = np.array([0, 1, 2**31, 2**32 - 1, 2**32 - 2], np.int64)
    assert unpack_words(pack_words(values, 32), values.size, 32).tolist() == values.tolist()
    assert pack_words(values, 32).size == 4 * values.size
