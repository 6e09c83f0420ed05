"""Hostile payloads: every malformed input raises PayloadError and writes nothing.

Corruption is tested twice: as it arrives (the CRC catches it) and with the
header's body length and CRC recomputed after the mutation, so the structural
checks behind the CRC are exercised too.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adacomp_mpi import (
    CodecConfig,
    PayloadError,
    TensorSpec,
    accumulate,
    decode,
    decode_mean,
    encode,
    make_state,
)
from adacomp_mpi.codec.api import encode_void, mean_into
from adacomp_mpi.codec.bitpack import pack_bits, pack_words
from adacomp_mpi.codec.indexcoding import FIXED, RICE, CodedIndices, coded_nbytes
from adacomp_mpi.codec.specs import layout_fingerprint
from adacomp_mpi.codec.wire import (
    DENSE,
    HEADER,
    HEADER_BYTES,
    RECORD,
    RECORD_HEADER_BYTES,
    Record,
    is_void,
    pack_payload,
    parse_payload,
)

SPECS = [
    TensorSpec("conv", 300, kind="conv", bin_size=50),
    TensorSpec("fc", 700, kind="fc", bin_size=500),
    TensorSpec("bias", 5, kind="other", compress=False),
]
FIELDS = ("method", "param", "reserved", "numel", "sent", "scale", "aux")
HEADER_FIELDS = ("magic", "version", "flags", "records", "fingerprint", "body_len", "crc")


def make_payload(coding: str, *, dense: bool = False, zero: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    state = make_state(SPECS, CodecConfig(index_coding=coding))
    for _ in range(3):
        grads = {
            s.name: np.zeros(s.numel, np.float32)
            if zero
            else (rng.standard_t(3, s.numel) * 1e-2).astype(np.float32)
            for s in SPECS
        }
        payload = encode(grads, state, dense=dense)
    return payload


VALID = {
    "fixed": make_payload("fixed"),
    "rice": make_payload("rice"),
    "auto": make_payload("auto"),
    "warmup": make_payload("auto", dense=True),
    "zero": make_payload("auto", zero=True),
}


# --------------------------------------------------------------------------- helpers


def record_offsets(payload: np.ndarray) -> list[int]:
    """Byte offset of every record header in a valid payload."""
    offsets, offset = [], HEADER_BYTES
    for _ in SPECS:
        offsets.append(offset)
        method, param, _, numel, sent, _, aux = RECORD.unpack_from(payload, offset)
        nbytes = 4 * numel if method == DENSE else coded_nbytes(method, param, sent, aux)
        offset += RECORD_HEADER_BYTES + nbytes + (-nbytes % 4)
    return offsets


def with_header(payload: np.ndarray | bytes, **fields: object) -> np.ndarray:
    """Rewrite header fields; body length and CRC are recomputed unless given."""
    data = bytes(payload)
    body = data[HEADER_BYTES:]
    values = dict(zip(HEADER_FIELDS, HEADER.unpack_from(data), strict=True))
    values.update(body_len=len(body), crc=zlib.crc32(body))
    values.update(fields)
    return np.frombuffer(HEADER.pack(*values.values()) + body, np.uint8)


def with_record(payload: np.ndarray, index: int, **fields: object) -> np.ndarray:
    """Rewrite one record header's fields, then fix the payload header's CRC."""
    data = bytearray(payload.tobytes())
    offset = record_offsets(payload)[index]
    values = dict(zip(FIELDS, RECORD.unpack_from(data, offset), strict=True))
    values.update(fields)
    RECORD.pack_into(data, offset, *values.values())
    return with_header(data)


def replace_records(base: np.ndarray, **records: Record) -> np.ndarray:
    """Re-pack a valid payload with some records swapped (CRC stays valid)."""
    parsed = parse_payload(base, SPECS)
    names = [s.name for s in SPECS]
    return pack_payload([records.get(n, r) for n, r in zip(names, parsed, strict=True)], SPECS)


def fixed_record(numel: int, words: list[int], width: int, count: int) -> Record:
    data = np.concatenate(
        [pack_words(np.array(words, np.int64), width), pack_bits(np.ones(count, np.bool_))]
    )
    return Record(numel, count, 0.5, coded=CodedIndices(FIXED, width, len(words) - count, data))


def rice_record(numel: int, unary: list[int], remainders: list[int], param: int) -> Record:
    count = len(remainders)
    data = np.concatenate(
        [
            np.packbits(np.array(unary, np.uint8)),
            pack_words(np.array(remainders, np.int64), param),
            pack_bits(np.zeros(count, np.bool_)),
        ]
    )
    return Record(numel, count, 0.5, coded=CodedIndices(RICE, param, len(unary), data))


def dense_record(values: list[float]) -> Record:
    return Record(len(values), len(values), 0.0, dense=np.array(values, np.float32))


def with_dense_value(payload: np.ndarray, index: int, position: int, value: float) -> np.ndarray:
    """Overwrite one float of a dense record, then fix the payload header's CRC."""
    data = bytearray(payload.tobytes())
    offset = record_offsets(payload)[index] + RECORD_HEADER_BYTES + 4 * position
    struct.pack_into("<f", data, offset, value)
    return with_header(data)


def first_record(name: str) -> dict[str, object]:
    payload = VALID[name]
    return dict(zip(FIELDS, RECORD.unpack_from(payload, HEADER_BYTES), strict=True))


def test_valid_payloads_cover_both_codes_and_dense() -> None:
    methods = {
        name: [RECORD.unpack_from(p, o)[0] for o in record_offsets(p)] for name, p in VALID.items()
    }
    assert methods["fixed"] == [FIXED, FIXED, DENSE]
    assert methods["rice"] == [RICE, RICE, DENSE]
    assert methods["warmup"] == [DENSE, DENSE, DENSE]
    assert first_record("fixed")["sent"] > 2 and first_record("rice")["sent"] > 2
    assert first_record("zero")["sent"] == 0
    for name, payload in VALID.items():
        assert name == "warmup" or payload.size < 400  # small enough to flip every bit
        decode(payload, SPECS)


# --------------------------------------------------------------------------- bad payloads


def _cases() -> dict[str, Callable[[], np.ndarray]]:
    fixed, rice, warmup = VALID["fixed"], VALID["rice"], VALID["warmup"]
    rice_sent = int(first_record("rice")["sent"])
    body = bytes(fixed[HEADER_BYTES:])
    other_specs = [TensorSpec("conv2", 300, kind="conv", bin_size=50), *SPECS[1:]]

    return {
        # header
        "empty": lambda: np.zeros(0, np.uint8),
        "wrong magic": lambda: with_header(fixed, magic=b"ACMQ"),
        "lowercase magic": lambda: with_header(fixed, magic=b"acmp"),
        "version 0": lambda: with_header(fixed, version=0),
        "version 2": lambda: with_header(fixed, version=2),
        "flags set": lambda: with_header(fixed, flags=1),
        "record count": lambda: with_header(fixed, records=2),
        "wrong fingerprint": lambda: with_header(
            fixed, fingerprint=layout_fingerprint(other_specs)
        ),
        "body length +1": lambda: with_header(fixed, body_len=len(body) + 1),
        "body length -4": lambda: with_header(fixed, body_len=len(body) - 4),
        "crc off by one": lambda: with_header(fixed, crc=(zlib.crc32(body) + 1) % 2**32),
        "trailing bytes, header fixed": lambda: with_header(fixed.tobytes() + bytes(4)),
        "trailing bytes, header stale": lambda: np.append(fixed, np.zeros(4, np.uint8)),
        "cut in record header": lambda: with_header(fixed[: HEADER_BYTES + 10]),
        "cut in record body": lambda: with_header(fixed[: record_offsets(fixed)[1] - 4]),
        "cut in dense body": lambda: with_header(warmup[:-8]),
        "cut after a record": lambda: with_header(fixed[: record_offsets(fixed)[2]]),
        # record headers (CRC recomputed)
        "sent > numel": lambda: with_record(fixed, 0, sent=301),
        "sent = numel": lambda: with_record(fixed, 0, sent=300),
        "rice sent = numel": lambda: with_record(rice, 1, sent=700),
        "numel - 1": lambda: with_record(fixed, 0, numel=299),
        "numel + 1": lambda: with_record(fixed, 1, numel=701),
        "dense numel": lambda: with_record(fixed, 2, numel=6, sent=6),
        "reserved set": lambda: with_record(fixed, 0, reserved=1),
        "method 3": lambda: with_record(fixed, 0, method=3),
        "method 255": lambda: with_record(rice, 1, method=255),
        "fixed width 0": lambda: with_record(fixed, 0, param=0),
        "fixed width 33": lambda: with_record(fixed, 0, param=33),
        "rice parameter 32": lambda: with_record(rice, 0, param=32),
        "fixed stream as rice": lambda: with_record(fixed, 0, method=RICE),
        "rice aux < count": lambda: with_record(rice, 0, aux=rice_sent - 1),
        "rice aux 0": lambda: with_record(rice, 0, aux=0),
        "scale nan": lambda: with_record(fixed, 0, scale=math.nan),
        "scale inf": lambda: with_record(fixed, 1, scale=math.inf),
        "scale -inf": lambda: with_record(fixed, 0, scale=-math.inf),
        "scale negative": lambda: with_record(rice, 0, scale=-1.0),
        "dense sent < numel": lambda: with_record(fixed, 2, sent=4),
        "dense with param": lambda: with_record(fixed, 2, param=1),
        "dense with aux": lambda: with_record(fixed, 2, aux=1),
        # crafted streams (consistent lengths, valid CRC)
        "fixed trailing escapes": lambda: replace_records(
            fixed, conv=fixed_record(300, [3, 10, 5, 63], 6, 3)
        ),
        "fixed escapes only": lambda: replace_records(
            fixed, conv=fixed_record(300, [63, 63], 6, 0)
        ),
        "fixed too few data words": lambda: replace_records(
            fixed, conv=fixed_record(300, [3, 63, 63], 6, 2)
        ),
        "fixed index past numel": lambda: replace_records(
            fixed, conv=fixed_record(300, [62, 62, 62, 62, 62], 6, 5)
        ),
        "fixed last index = numel": lambda: replace_records(
            fixed, fc=fixed_record(700, [699, 0], 10, 2)
        ),
        "fixed index past numel, 2nd tensor": lambda: replace_records(
            fixed, fc=fixed_record(700, [1023, 0], 10, 1)
        ),
        "rice missing final one": lambda: replace_records(
            rice, conv=rice_record(300, [0, 0, 1, 0, 1, 0, 0], [1, 2], 3)
        ),
        "rice too many ones": lambda: replace_records(
            rice, conv=rice_record(300, [1, 1, 1], [1, 2], 3)
        ),
        "rice index past numel": lambda: replace_records(
            rice, conv=rice_record(300, [0] * 10 + [1], [0], 5)
        ),
        "rice unary bits, no elements": lambda: replace_records(
            rice, conv=rice_record(300, [0, 0, 0], [], 3)
        ),
        "coded record for dense-only tensor": lambda: replace_records(
            fixed, bias=fixed_record(5, [1], 2, 1)
        ),
        # non-finite values (CRC valid): a dense record must hold finite floats
        "dense nan": lambda: replace_records(fixed, bias=dense_record([1, 2, math.nan, 4, 5])),
        "dense inf": lambda: replace_records(fixed, bias=dense_record([math.inf, 2, 3, 4, 5])),
        "dense -inf": lambda: replace_records(fixed, bias=dense_record([1, 2, 3, 4, -math.inf])),
        "warm-up nan": lambda: with_dense_value(warmup, 1, 699, math.nan),
        "warm-up inf": lambda: with_dense_value(warmup, 0, 0, math.inf),
        "rice scale nan": lambda: with_record(rice, 1, scale=math.nan),
        "void with a body": lambda: with_header(
            np.concatenate([fixed[:HEADER_BYTES], np.zeros(4, np.uint8)]), flags=1, records=0
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_structural_corruption_is_rejected(name: str) -> None:
    payload = CASES[name]()
    with pytest.raises(PayloadError):
        decode(payload, SPECS)
    assert_accumulate_untouched(payload)
    with pytest.raises(PayloadError):
        decode_mean([VALID["auto"], payload], SPECS)


def assert_accumulate_untouched(payload: np.ndarray) -> None:
    """accumulate and mean_into validate every payload before writing anything."""
    rng = np.random.default_rng(1)
    out = {s.name: rng.standard_normal(s.numel).astype(np.float32) for s in SPECS}
    before = {name: a.copy() for name, a in out.items()}
    with pytest.raises(PayloadError):
        accumulate(payload, SPECS, out)
    with pytest.raises(PayloadError):
        mean_into([VALID["auto"], payload], SPECS, out)
    for name, want in before.items():
        np.testing.assert_array_equal(out[name], want)


@pytest.mark.parametrize("name", ["fixed", "rice"])
def test_off_by_one_counts_decode_or_raise(name: str) -> None:
    """sent or aux off by one can still describe a valid stream of the same byte
    length (padding bits are not checked): it must then decode cleanly."""
    payload = VALID[name]
    for index in (0, 1):
        offset = record_offsets(payload)[index]
        fields = dict(zip(FIELDS, RECORD.unpack_from(payload, offset), strict=True))
        for field in ("sent", "aux"):
            for delta in (-1, 1):
                value = int(fields[field]) + delta  # type: ignore[call-overload]
                if value < 0:
                    continue
                mutated = with_record(payload, index, **{field: value})
                try:
                    decoded = decode(mutated, SPECS)
                except PayloadError:
                    assert_accumulate_untouched(mutated)
                    continue
                assert all(np.isfinite(decoded[s.name]).all() for s in SPECS)


@pytest.mark.parametrize("name", ["fixed", "rice", "warmup"])
def test_every_truncation_is_rejected(name: str) -> None:
    payload = VALID[name]
    for length in range(payload.size):
        with pytest.raises(PayloadError):
            decode(payload[:length], SPECS)
        if length > HEADER_BYTES:  # and with the header made to match the cut
            with pytest.raises(PayloadError):
                decode(with_header(payload[:length]), SPECS)


@pytest.mark.parametrize("name", ["fixed", "rice", "zero"])
def test_every_single_bit_flip_is_rejected(name: str) -> None:
    payload = VALID[name]
    bits = np.unpackbits(payload)
    for position in range(bits.size):
        bits[position] ^= 1
        with pytest.raises(PayloadError):
            decode(np.packbits(bits), SPECS)
        bits[position] ^= 1
    assert_accumulate_untouched(np.packbits(np.roll(bits, 1)))


def test_is_void_reads_the_header_and_leaves_the_body_crc_to_the_decoder() -> None:
    """The exchange asks is_void of every payload and then decodes them all:
    each body CRC is computed once, by the decode."""
    void = encode_void(make_state(SPECS))
    assert is_void(void, SPECS) and not is_void(VALID["auto"], SPECS)
    corrupted = VALID["auto"].copy()
    corrupted[-1] ^= 1  # body bit flip, stale CRC
    assert not is_void(corrupted, SPECS)
    with pytest.raises(PayloadError, match="checksum"):
        decode(corrupted, SPECS)
    for bad in (void[:-1], with_header(void, magic=b"ACMQ"), with_header(void, records=1)):
        with pytest.raises(PayloadError):
            is_void(bad, SPECS)
    with pytest.raises(PayloadError, match="void"):
        decode(void, SPECS)


def test_another_layout_is_rejected() -> None:
    renamed = [TensorSpec("conv2", 300, kind="conv", bin_size=50), *SPECS[1:]]
    rebinned = [TensorSpec("conv", 300, kind="conv", bin_size=60), *SPECS[1:]]
    for specs in (renamed, rebinned, SPECS[:2], [*SPECS, TensorSpec("x", 3)]):
        with pytest.raises(PayloadError, match="layout"):
            decode(VALID["fixed"], specs)


@pytest.mark.parametrize(
    "payload",
    [
        VALID["fixed"].astype(np.int16),
        VALID["fixed"].reshape(1, -1),
        VALID["fixed"].tobytes(),
        VALID["fixed"].view(np.int8),
    ],
    ids=["int16", "2-D", "bytes", "int8"],
)
def test_only_1d_uint8_payloads(payload: object) -> None:
    with pytest.raises(PayloadError, match="uint8"):
        decode(payload, SPECS)  # type: ignore[arg-type]


def test_strided_payload_view_decodes() -> None:
    payload = VALID["auto"]
    strided = np.repeat(payload, 2)[::2]
    assert not strided.flags.c_contiguous
    for name, values in decode(strided, SPECS).items():
        np.testing.assert_array_equal(values, decode(payload, SPECS)[name])


def test_header_layout_is_documented_size() -> None:
    assert HEADER_BYTES == 20 and RECORD_HEADER_BYTES == 20
    magic, version, flags, records, _, body_len, crc = HEADER.unpack_from(VALID["auto"])
    assert (magic, version, flags, records) == (b"ACMP", 1, 0, len(SPECS))
    assert body_len == VALID["auto"].size - HEADER_BYTES
    assert crc == zlib.crc32(VALID["auto"][HEADER_BYTES:])


# --------------------------------------------------------------------------- fuzzing


OPS = ("truncate", "extend", "flip", "overwrite", "field")
INTERESTING = (0, 1, 2, 3, 31, 32, 33, 63, 255, 256, 299, 300, 301, 699, 700, 2**16 - 1, 2**32 - 1)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> np.ndarray:
    """A valid payload after 1-4 random mutations; header fixed half the time."""
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))].tobytes())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(OPS))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[position:]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
        elif op == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[position : position + len(chunk)] = chunk
        elif op == "field" and len(data) >= 4:
            position = min(position, len(data) - 4)
            struct.pack_into("<I", data, position, draw(st.sampled_from(INTERESTING)))
    if len(data) >= HEADER_BYTES and draw(st.booleans()):
        return with_header(data)
    return np.frombuffer(bytes(data), np.uint8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=mutated_payloads())
def test_fuzzed_payloads_decode_or_raise_payload_error(payload: np.ndarray) -> None:
    """Accepted payloads decode to finite values of the right shapes (dense
    records included: the decoder refuses a NaN or an infinity in them)."""
    out = {s.name: np.zeros(s.numel, np.float32) for s in SPECS}
    try:
        accumulate(payload, SPECS, out)
    except PayloadError:
        assert not any(a.any() for a in out.values())
        return
    for spec in SPECS:
        array = out[spec.name]
        assert array.shape == (spec.numel,) and array.dtype == np.float32
        assert np.isfinite(array).all()


def test_fuzz_script_runs_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_decoder.py"
    spec = importlib.util.spec_from_file_location("fuzz_decoder", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fuzz_decoder", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    result = CliRunner().invoke(module.main, ["--iterations", "400", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "crashes 0" in result.output
