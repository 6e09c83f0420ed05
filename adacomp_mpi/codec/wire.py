"""The payload format: one self-describing, versioned byte string per rank.

    payload  = header, then one record per tensor in layout order
    header   = "ACMP", version u8, flags u8 (0), records u16,
               layout fingerprint u32, body length u32, body CRC32 u32
    record   = method u8, param u8, reserved u16 (0), numel u32, sent u32,
               scale f32, aux u32, then the record body padded to 4 bytes
    method 0 = dense: numel little-endian float32 values
    method 1/2 = AdaComp: coded positions and signs (see ``indexcoding``)
    flag 1 (void): the sender's gradient was not finite; no records follow
    (the body is empty), and every rank skips the step.

All integers are little-endian. The parser checks every field against the
expected layout, the body CRC, and that dense values and scales are finite,
before anything is decoded, and raises ``PayloadError``.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PayloadError
from .finite import all_finite
from .indexcoding import CodedIndices, coded_nbytes
from .specs import TensorSpec, layout_fingerprint

MAGIC = b"ACMP"
VERSION = 1
DENSE = 0
FLAG_VOID = 1
HEADER = struct.Struct("<4sBBHIII")
RECORD = struct.Struct("<BBHIIfI")
HEADER_BYTES = HEADER.size
RECORD_HEADER_BYTES = RECORD.size


# A coded record's sent positions (int64, increasing) and sign bits, as decoding
# its index stream gives them; () for a dense record.
Positions = tuple


@dataclass(frozen=True)
class Record:
    """One tensor's share of a payload, as written or as parsed."""

    numel: int
    sent: int
    scale: float
    dense: np.ndarray | None = None  # float32 values when sent densely
    coded: CodedIndices | None = None


def _padding(nbytes: int) -> int:
    return -nbytes % 4


def _record_parts(record: Record) -> tuple[bytes, np.ndarray]:
    """The record header and its body bytes (padding is added by the caller)."""
    if record.dense is not None:
        method, param, aux = DENSE, 0, 0
        body: np.ndarray = record.dense.astype("<f4", copy=False).view(np.uint8)
    else:
        coded = record.coded
        method, param, aux, body = coded.method, coded.param, coded.aux, coded.data
    head = RECORD.pack(method, param, 0, record.numel, record.sent, record.scale, aux)
    return head, body


def _sealed(body: np.ndarray) -> tuple[int, int]:
    """(length, CRC32) of a body, as the header stores them."""
    return body.size, zlib.crc32(body)


def pack_payload(
    records: Sequence[Record], specs: Sequence[TensorSpec], *, void: bool = False
) -> np.ndarray:
    """Serialise records (in layout order) into one uint8 array.

    Every part is copied once, straight into its place in the payload, and the
    CRC is computed once over the finished body.
    """
    parts = [_record_parts(record) for record in records]
    sizes = [RECORD_HEADER_BYTES + body.size + _padding(body.size) for _, body in parts]
    payload = np.empty(HEADER_BYTES + sum(sizes), np.uint8)
    offset = HEADER_BYTES
    for (head, body), size in zip(parts, sizes, strict=True):
        start, end = offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + body.size
        payload[offset:start] = np.frombuffer(head, np.uint8)
        payload[start:end] = body
        payload[end : offset + size] = 0  # padding
        offset += size
    body = payload[HEADER_BYTES:]
    flags = FLAG_VOID if void else 0
    fingerprint = layout_fingerprint(specs)
    HEADER.pack_into(payload, 0, MAGIC, VERSION, flags, len(records), fingerprint, *_sealed(body))
    return payload


def _check_header(payload: np.ndarray, specs: Sequence[TensorSpec], *, checksum: bool) -> bool:
    """Validate the header (and, if asked, the body CRC); returns whether void.

    A void payload has an empty body, so its CRC is always checked.
    """
    if payload.size < HEADER_BYTES:
        raise PayloadError(f"payload of {payload.size} bytes is shorter than its header")
    magic, version, flags, count, fingerprint, body_len, crc = HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise PayloadError(f"not an AdaComp payload (magic {magic!r})")
    if version != VERSION or flags & ~FLAG_VOID:
        raise PayloadError(
            f"unsupported payload version {version} (flags {flags}); expected {VERSION}"
        )
    void = bool(flags & FLAG_VOID)
    if count != (0 if void else len(specs)) or fingerprint != layout_fingerprint(specs):
        raise PayloadError("payload was made for a different model layout")
    if body_len != payload.size - HEADER_BYTES:
        raise PayloadError(
            f"payload body is {payload.size - HEADER_BYTES} bytes, header says {body_len}"
        )
    if void and body_len:
        raise PayloadError(f"a void payload has a body of {body_len} bytes")
    if (checksum or void) and zlib.crc32(payload[HEADER_BYTES:]) != crc:
        raise PayloadError("payload checksum mismatch (corrupted in transit?)")
    return void


def _parse_record(payload: np.ndarray, offset: int, spec: TensorSpec) -> tuple[Record, int]:
    if offset + RECORD_HEADER_BYTES > payload.size:
        raise PayloadError(f"{spec.name}: record header truncated")
    method, param, reserved, numel, sent, scale, aux = RECORD.unpack_from(payload, offset)
    offset += RECORD_HEADER_BYTES
    if reserved or numel != spec.numel or sent > numel:
        raise PayloadError(f"{spec.name}: bad record header (numel {numel}, sent {sent})")
    if not (math.isfinite(scale) and scale >= 0):
        raise PayloadError(f"{spec.name}: bad scale {scale}")
    if method == DENSE:
        if sent != numel or param or aux:
            raise PayloadError(f"{spec.name}: inconsistent dense record")
        nbytes = 4 * numel
    else:
        if not spec.compress:
            raise PayloadError(f"{spec.name}: compressed record for a dense-only tensor")
        nbytes = coded_nbytes(method, param, sent, aux)
    end = offset + nbytes
    if end + _padding(nbytes) > payload.size:
        raise PayloadError(f"{spec.name}: record body truncated")
    body = payload[offset:end]
    if method == DENSE:
        dense = body.view("<f4")
        if not all_finite(dense):
            raise PayloadError(f"{spec.name}: dense record holds a NaN or an infinity")
        record = Record(numel, sent, scale, dense=dense)
    else:
        record = Record(numel, sent, scale, coded=CodedIndices(method, param, aux, body))
    return record, end + _padding(nbytes)


def _as_payload(payload: np.ndarray) -> np.ndarray:
    payload = np.asarray(payload)
    if payload.dtype != np.uint8 or payload.ndim != 1:
        raise PayloadError("a payload must be a 1-D uint8 array")
    return np.ascontiguousarray(payload)  # struct and zlib need one contiguous buffer


def is_void(payload: np.ndarray, specs: Sequence[TensorSpec]) -> bool:
    """Validate a payload's header; True if its sender voided the step.

    The body CRC of a non-void payload is left to ``parse_payload``, which
    reads the body anyway: the receive path checks each CRC once.
    """
    return _check_header(_as_payload(payload), specs, checksum=False)


def parse_payload(payload: np.ndarray, specs: Sequence[TensorSpec]) -> list[Record]:
    """Validate and split a non-void payload into records; raises PayloadError."""
    payload = _as_payload(payload)
    if _check_header(payload, specs, checksum=True):
        raise PayloadError("a void payload carries no gradients to decode")
    records, offset = [], HEADER_BYTES
    for spec in specs:
        record, offset = _parse_record(payload, offset, spec)
        records.append(record)
    if offset != payload.size:
        raise PayloadError(f"{payload.size - offset} unexpected bytes after the last record")
    return records
