"""The index message of the shared-index mode: the leader's positions, once.

    message = header, then one record per compressed tensor in layout order
    header  = "ACSI", version u8, flags u8, records u16,
              layout fingerprint u32, body length u32, body CRC32 u32
    record  = method u8, param u8, reserved u16 (0), count u32, aux u32,
              then the coded positions padded to 4 bytes
    flag 1 (void): the leader's accumulated gradient was not finite; no
    records follow and every rank skips the step.

Positions are coded exactly as in an AdaComp record (``indexcoding``: fixed
gap words or Rice, whichever is smaller) minus the sign stream, which is
the last ``ceil(count / 8)`` bytes of an AdaComp record and carries nothing
here: every rank sends its own values at these positions, signs included.

A tensor selected with a fixed count M per bin (``shared_selection``) is
coded as method 3 (OFFSETS) instead: param = ceil(log2 L_T), aux = M, and
each position's offset inside its bin in ``param`` bits, bins in order.
Its size is fixed by the layout (so the bytes per step cannot drift with N)
and the count must be the one M implies.
The parser checks everything before it returns, and raises ``PayloadError``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .bitpack import pack_words, packed_nbytes, unpack_words
from .errors import PayloadError
from .indexcoding import CodedIndices, coded_nbytes, decode_indices, encode_indices
from .specs import TensorSpec, layout_fingerprint

MAGIC = b"ACSI"
VERSION = 1
FLAG_VOID = 1
HEADER = struct.Struct("<4sBBHIII")
RECORD = struct.Struct("<BBHII")
HEADER_BYTES = HEADER.size
OFFSETS = 3  # fixed-width offsets inside the bins (indexcoding has 1 and 2)


def compressed_specs(specs: Sequence[TensorSpec]) -> list[TensorSpec]:
    """The tensors that travel as shared positions (the rest go dense)."""
    return [spec for spec in specs if spec.compress]


@dataclass(frozen=True)
class IndexMessage:
    """The packed message and, per compressed tensor, its record's bytes
    (header, coded positions, padding) and coded position bytes alone."""

    data: np.ndarray
    record_bytes: tuple[int, ...] = ()
    coded_bytes: tuple[int, ...] = ()


def offset_width(bin_size: int) -> int:
    """Bits of one offset inside a bin of ``bin_size`` elements."""
    return max(1, (bin_size - 1).bit_length())


def _bin_starts(numel: int, bin_size: int, per_bin: int) -> np.ndarray:
    """The first position of the bin of every selected element, in order."""
    full, tail = divmod(numel, bin_size)
    starts = np.repeat(np.arange(full, dtype=np.int64) * bin_size, min(per_bin, bin_size))
    return np.concatenate([starts, np.full(min(per_bin, tail), full * bin_size, np.int64)])


def _record(
    positions: np.ndarray, spec: TensorSpec, methods: tuple[int, ...], per_bin: int
) -> tuple[bytes, int]:
    """One record and the size of its coded positions."""
    if per_bin:
        width = offset_width(spec.bin_size)
        body = pack_words(positions % spec.bin_size, width)
        head = RECORD.pack(OFFSETS, width, 0, positions.size, per_bin)
    else:
        negative = np.zeros(positions.size, np.bool_)
        coded = encode_indices(positions, negative, bin_size=spec.bin_size, methods=methods)
        body = coded.data[: coded.data.size - packed_nbytes(positions.size)]
        head = RECORD.pack(coded.method, coded.param, 0, positions.size, coded.aux)
    return head + body.tobytes() + bytes(-body.size % 4), body.size


def pack_positions(
    positions: Sequence[np.ndarray],
    specs: Sequence[TensorSpec],
    *,
    methods: tuple[int, ...],
    per_bin: Sequence[int] = (),
    void: bool = False,
) -> IndexMessage:
    """One uint8 message: the sorted positions of every compressed tensor
    (``positions`` in the order of ``compressed_specs(specs)``). ``per_bin``:
    M per compressed tensor, same order, where the positions are exactly the
    fixed-count selection (OFFSETS record); 0 or absent: gap-coded."""
    shared = compressed_specs(specs)
    if not void and len(positions) != len(shared):
        raise ValueError(f"{len(positions)} position sets for {len(shared)} compressed tensors")
    counts = list(per_bin) or [0] * len(shared)
    records = (
        []
        if void
        else [_record(p, s, methods, m) for p, s, m in zip(positions, shared, counts, strict=True)]
    )
    body = b"".join(record for record, _ in records)
    flags = FLAG_VOID if void else 0
    header = HEADER.pack(
        MAGIC, VERSION, flags, len(records), layout_fingerprint(specs), len(body), zlib.crc32(body)
    )
    data = np.frombuffer(header + body, np.uint8).copy()
    return IndexMessage(
        data, tuple(len(record) for record, _ in records), tuple(coded for _, coded in records)
    )


def _check_header(message: np.ndarray, specs: Sequence[TensorSpec]) -> tuple[bool, int]:
    """(void, records) after checking magic, version, layout, length and CRC."""
    if message.size < HEADER_BYTES:
        raise PayloadError(f"index message of {message.size} bytes is shorter than its header")
    magic, version, flags, records, fingerprint, length, crc = HEADER.unpack_from(message, 0)
    if magic != MAGIC or version != VERSION:
        raise PayloadError(f"not an index message (magic {magic!r}, version {version})")
    if fingerprint != layout_fingerprint(specs):
        raise PayloadError("index message was made for a different model layout")
    body = message[HEADER_BYTES:]
    if length != body.size or zlib.crc32(body) != crc:
        raise PayloadError("index message body is truncated or corrupted")
    if flags not in (0, FLAG_VOID):
        raise PayloadError(f"index message has unknown flags {flags}")
    return flags == FLAG_VOID, records


def _parse_offsets(
    message: np.ndarray, start: int, spec: TensorSpec, param: int, count: int, per_bin: int
) -> tuple[np.ndarray, int]:
    """An OFFSETS record's positions and the end of its coded bytes."""
    if param != offset_width(spec.bin_size) or per_bin < 1:
        raise PayloadError(f"{spec.name!r}: offset record of width {param}, M {per_bin}")
    starts = _bin_starts(spec.numel, spec.bin_size, per_bin)
    if count != starts.size:
        raise PayloadError(f"{spec.name!r}: {count} positions, M = {per_bin} implies {starts.size}")
    end = start + packed_nbytes(count * param)
    if end > message.size:
        raise PayloadError(f"index message ends inside the positions of {spec.name!r}")
    positions = unpack_words(message[start:end], count, param) + starts
    limit = np.minimum(starts + spec.bin_size, spec.numel)
    if count and not (positions < limit).all():
        raise PayloadError(f"{spec.name!r}: an offset lies outside its bin")
    return positions, end


def _parse_record(message: np.ndarray, offset: int, spec: TensorSpec) -> tuple[np.ndarray, int]:
    if offset + RECORD.size > message.size:
        raise PayloadError(f"index message ends inside the record of {spec.name!r}")
    method, param, _, count, aux = RECORD.unpack_from(message, offset)
    if count > spec.numel:
        raise PayloadError(f"{spec.name!r}: {count} positions for {spec.numel} elements")
    start = offset + RECORD.size
    if method == OFFSETS:
        positions, end = _parse_offsets(message, start, spec, param, count, aux)
    else:
        signs = packed_nbytes(count)
        nbytes = coded_nbytes(method, param, count, aux) - signs
        end = start + nbytes
        if end > message.size:
            raise PayloadError(f"index message ends inside the positions of {spec.name!r}")
        data = np.concatenate([message[start:end], np.zeros(signs, np.uint8)])
        positions, _ = decode_indices(
            CodedIndices(method, param, aux, data), count=count, numel=spec.numel
        )
    if count > 1 and not (np.diff(positions) > 0).all():
        raise PayloadError(f"{spec.name!r}: positions are not strictly increasing")
    return positions, end + (-(end - start) % 4)


def unpack_positions(message: np.ndarray, specs: Sequence[TensorSpec]) -> list[np.ndarray] | None:
    """The positions of every compressed tensor, or None for a void message."""
    message = np.ascontiguousarray(message, np.uint8)
    void, records = _check_header(message, specs)
    if void:
        return None
    shared = compressed_specs(specs)
    if records != len(shared):
        raise PayloadError(f"index message has {records} records, layout has {len(shared)}")
    offset, positions = HEADER_BYTES, []
    for spec in shared:
        found, offset = _parse_record(message, offset, spec)
        positions.append(found)
    if offset != message.size:
        raise PayloadError("index message has trailing bytes after its last record")
    return positions


__all__ = [
    "HEADER_BYTES",
    "OFFSETS",
    "IndexMessage",
    "compressed_specs",
    "offset_width",
    "pack_positions",
    "unpack_positions",
]
