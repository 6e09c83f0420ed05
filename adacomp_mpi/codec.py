"""Public codec API: named float32 gradients + state -> bytes, and back.

NumPy in, bytes out; no torch, no MPI. Typical use::

    state = make_state(specs)
    payload = encode(grads, state)              # grads: {name: float32 array}
    mean = decode_mean([payload_rank0, ...], specs)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .adacomp import select_and_update
from .indexcoding import METHOD_NAMES, decode_indices, encode_indices
from .specs import TensorSpec
from .state import CodecState, KindCounters
from .wire import HEADER_BYTES, RECORD_HEADER_BYTES, Record, pack_payload, parse_payload


def _flat_float32(name: str, array: np.ndarray, numel: int) -> np.ndarray:
    flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    if flat.size != numel:
        raise ValueError(f"gradient {name!r} has {flat.size} elements, layout says {numel}")
    return flat


def _encode_tensor(state: CodecState, index: int, grad: np.ndarray, dense: bool) -> Record:
    spec = state.specs[index]
    if dense or not spec.compress:
        return Record(spec.numel, spec.numel, 0.0, dense=grad)
    selection = select_and_update(
        state.residues[index],
        grad,
        bin_size=spec.bin_size,
        scale_rule=state.config.scale_rule,
        workspace=state.workspace,
    )
    coded = encode_indices(
        selection.indices,
        selection.negative,
        bin_size=spec.bin_size,
        methods=METHOD_NAMES[state.config.index_coding],
    )
    return Record(spec.numel, selection.count, float(selection.scale), coded=coded)


def _count(state: CodecState, spec: TensorSpec, record: Record) -> None:
    body = record.dense.nbytes if record.coded is None else record.coded.data.size
    counters = KindCounters(
        elements=spec.numel,
        sent=record.sent,
        record_bytes=RECORD_HEADER_BYTES + body + (-body % 4),
    )
    if record.coded is not None:
        counters.coded_sent, counters.coded_bytes = record.sent, body
    state.by_kind[spec.kind].add(counters)


def encode_void(state: CodecState) -> np.ndarray:
    """A payload that tells every rank to skip this step (non-finite gradient here)."""
    payload = pack_payload([], state.specs, void=True)
    state.payload_bytes += payload.size
    return payload


def encode(
    grads: Mapping[str, np.ndarray], state: CodecState, *, dense: bool = False
) -> np.ndarray:
    """Encode one step's gradients into a payload, updating the residues.

    ``dense=True`` sends every tensor uncompressed (warm-up steps) and leaves
    the residues untouched.
    """
    records = []
    for index, spec in enumerate(state.specs):
        grad = _flat_float32(spec.name, grads[spec.name], spec.numel)
        record = _encode_tensor(state, index, grad, dense)
        _count(state, spec, record)
        records.append(record)
    payload = pack_payload(records, state.specs)
    state.steps += 1
    state.payload_bytes += payload.size
    return payload


def _decoded(payload: np.ndarray, specs: Sequence[TensorSpec]) -> list[tuple[Record, tuple]]:
    """Parse and decode every record first, so nothing is written for a bad payload."""
    return [
        (record, decode_indices(record.coded, count=record.sent, numel=spec.numel))
        if record.coded is not None
        else (record, ())
        for record, spec in zip(parse_payload(payload, specs), specs, strict=True)
    ]


def _add_sparse(record: Record, positions: tuple, target: np.ndarray) -> None:
    indices, negative = positions
    scale = np.float32(record.scale)
    target[indices] += np.where(negative, -scale, scale)


def accumulate(payload: np.ndarray, specs: Sequence[TensorSpec], out: Sequence[np.ndarray]) -> None:
    """Add a payload's decoded tensors into ``out`` (flat float32 arrays).

    The whole payload is validated before anything is added, so a bad payload
    raises ``PayloadError`` and leaves ``out`` untouched.
    """
    for (record, positions), target in zip(_decoded(payload, specs), out, strict=True):
        if record.dense is not None:
            target += record.dense
        else:
            _add_sparse(record, positions, target)


def restore_residues(payload: np.ndarray, state: CodecState) -> None:
    """Undo a step this rank encoded but nobody applied: put what it sent back
    into the residues (R = G - q becomes G again), so no gradient mass is lost."""
    decoded = _decoded(payload, state.specs)
    for (record, positions), residue in zip(decoded, state.residues, strict=True):
        if record.coded is not None:
            _add_sparse(record, positions, residue)


def decode(payload: np.ndarray, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Decode one payload into dense flat float32 arrays keyed by name."""
    out = [np.zeros(spec.numel, np.float32) for spec in specs]
    accumulate(payload, specs, out)
    return {spec.name: array for spec, array in zip(specs, out, strict=True)}


def decode_mean(payloads: Sequence[np.ndarray], specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """Sum payloads in the given order, then divide: bit-identical wherever run."""
    out = [np.zeros(spec.numel, np.float32) for spec in specs]
    for payload in payloads:
        accumulate(payload, specs, out)
    divisor = np.float32(len(payloads))
    for array in out:
        array /= divisor
    return out


__all__ = ["HEADER_BYTES", "accumulate", "decode", "decode_mean", "encode"]
