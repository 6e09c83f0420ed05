"""Public codec API: float32 gradients addressed by tensor name <-> one payload.

NumPy in, bytes out; no torch, no MPI. Every function addresses tensors the
same way, by name, and every decoder returns (or fills) a ``{name: flat
float32 array}`` mapping. Typical use::

    state = make_state(specs)
    payload = encode(grads, state)              # grads: {name: float32 array}
    mean = decode_mean([payload_rank0, ...], specs)
    mean["fc1.weight"]                          # flat float32, the mean over ranks
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .counters import KindCounters, StepCounts
from .finite import all_finite
from .indexcoding import METHOD_NAMES, decode_indices, encode_indices
from .selection import NonFiniteError, select_and_update, signed_scale
from .specs import TensorSpec
from .state import CodecState
from .wire import HEADER_BYTES, RECORD_HEADER_BYTES, Record, pack_payload, parse_payload


@dataclass(frozen=True)
class Encoded:
    """One step's payload and what it holds per layer kind."""

    payload: np.ndarray
    counts: StepCounts


def _flat_float32(name: str, array: np.ndarray, numel: int) -> np.ndarray:
    flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    if flat.size != numel:
        raise ValueError(f"gradient {name!r} has {flat.size} elements, layout says {numel}")
    return flat


def _not_finite(name: str, grad: np.ndarray) -> ValueError:
    """The error for a refused tensor; the exact test runs only on this path."""
    if all_finite(grad):
        return ValueError(
            f"gradient {name!r}: residue + gradient overflows float32; nothing was encoded"
        )
    return ValueError(f"gradient {name!r} holds a NaN or an infinity; nothing was encoded")


def _encode_tensor(state: CodecState, index: int, grad: np.ndarray, dense: bool) -> Record:
    """One tensor's record; a compressed tensor's new residue goes to its spare
    (and, with momentum correction, every tensor's new velocity to its own)."""
    spec = state.specs[index]
    velocities = state.velocities
    if velocities is not None:  # the codec sends u = m * u + g in place of g
        grad = velocities.advance(index, grad)
    if dense or not spec.compress:
        if not all_finite(grad):
            raise _not_finite(spec.name, grad)
        return Record(spec.numel, spec.numel, 0.0, dense=grad)
    try:
        selection = select_and_update(
            state.residues[index],
            grad,
            bin_size=spec.bin_size,
            scale_rule=state.config.scale_rule,
            workspace=state.workspace,
            out=state.workspace.spare(index, spec.numel),
        )
    except NonFiniteError:
        raise _not_finite(spec.name, grad) from None
    if velocities is not None:
        velocities.mask(index, selection.indices)
    coded = encode_indices(
        selection.indices,
        selection.negative,
        bin_size=spec.bin_size,
        methods=METHOD_NAMES[state.config.index_coding],
    )
    return Record(spec.numel, selection.count, float(selection.scale), coded=coded)


def _count(counts: StepCounts, spec: TensorSpec, record: Record) -> None:
    body = record.dense.nbytes if record.coded is None else record.coded.data.size
    counters = KindCounters(
        elements=spec.numel,
        sent=record.sent,
        record_bytes=RECORD_HEADER_BYTES + body + (-body % 4),
    )
    if record.coded is not None:
        counters.coded_sent, counters.coded_bytes = record.sent, body
    counts.setdefault(spec.kind, KindCounters()).add(counters)


def encode_void(state: CodecState) -> np.ndarray:
    """A payload that tells every rank to skip this step (non-finite gradient here)."""
    return pack_payload([], state.specs, void=True)


def encode_counted(
    grads: Mapping[str, np.ndarray], state: CodecState, *, dense: bool = False
) -> Encoded:
    """``encode``, also returning what the payload holds per layer kind.

    Raises ValueError, with every residue as it was, for a non-finite
    gradient (see ``encode``).
    """
    records, counts = [], {}
    for index, spec in enumerate(state.specs):
        grad = _flat_float32(spec.name, grads[spec.name], spec.numel)
        record = _encode_tensor(state, index, grad, dense)
        _count(counts, spec, record)
        records.append(record)
    payload = pack_payload(records, state.specs)
    commit(state, dense=dense)
    return Encoded(payload, counts)


def commit(state: CodecState, *, dense: bool) -> None:
    """Every tensor of the step was finite: the new residues (not after a
    dense step, which leaves them alone) and velocities take over."""
    if not dense:
        residues = state.residues
        for index, spec in enumerate(state.specs):
            if spec.compress:
                residues[index] = state.workspace.swap(index, residues[index])
    if state.velocities is not None:
        state.velocities.commit()


def encode(
    grads: Mapping[str, np.ndarray], state: CodecState, *, dense: bool = False
) -> np.ndarray:
    """Encode one step's gradients into a payload, updating the residues.

    ``dense=True`` sends every tensor uncompressed (warm-up steps) and leaves
    the residues untouched. A gradient with a NaN or an infinity (or whose sum
    with the residue overflows float32) raises ValueError naming the tensor,
    and leaves every residue exactly as it was: the new residues are written
    to spare buffers and swapped in only after every tensor passed.
    """
    return encode_counted(grads, state, dense=dense).payload


Decoded = list[tuple[Record, tuple]]


def _decoded(payload: np.ndarray, specs: Sequence[TensorSpec]) -> Decoded:
    """Parse and decode every record first, so nothing is written for a bad payload."""
    return [
        (record, decode_indices(record.coded, count=record.sent, numel=spec.numel))
        if record.coded is not None
        else (record, ())
        for record, spec in zip(parse_payload(payload, specs), specs, strict=True)
    ]


def _add_sparse(record: Record, positions: tuple, target: np.ndarray) -> None:
    """target[i] += +-scale at the sent positions (unique, so ``add.at`` is exact:
    it is also NumPy 2's fastest scatter-add, ahead of ``target[i] += v``)."""
    indices, negative = positions
    np.add.at(target, indices, signed_scale(negative, np.float32(record.scale)))


def _add_decoded(
    decoded: Decoded, specs: Sequence[TensorSpec], out: Mapping[str, np.ndarray]
) -> None:
    for (record, positions), spec in zip(decoded, specs, strict=True):
        target = out[spec.name]
        if record.dense is not None:
            target += record.dense
        else:
            _add_sparse(record, positions, target)


def accumulate(
    payload: np.ndarray, specs: Sequence[TensorSpec], out: Mapping[str, np.ndarray]
) -> None:
    """Add a payload's decoded tensors into ``out`` ({name: flat float32 array}).

    The whole payload is validated before anything is added, so a bad payload
    (truncated, corrupted, a NaN or infinity in a dense record or the scale)
    raises ``PayloadError`` and leaves ``out`` untouched.
    """
    _add_decoded(_decoded(payload, specs), specs, out)


def restore_residues(payload: np.ndarray, state: CodecState) -> None:
    """Undo a step this rank encoded but nobody applied: put what it sent back
    into the residues (R = G - q becomes G again), so no gradient mass is lost.
    With momentum correction, a sparsely sent tensor's velocity is unmasked and
    a dense one's goes back to before the step (``Velocities.undo``)."""
    decoded = _decoded(payload, state.specs)
    for (record, positions), residue in zip(decoded, state.residues, strict=True):
        if record.coded is not None:
            _add_sparse(record, positions, residue)
    if state.velocities is not None:
        state.velocities.undo()


def _zeros(specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    return {spec.name: np.zeros(spec.numel, np.float32) for spec in specs}


def decode(payload: np.ndarray, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Decode one payload into dense flat float32 arrays keyed by name."""
    out = _zeros(specs)
    accumulate(payload, specs, out)
    return out


def mean_into(
    payloads: Sequence[np.ndarray], specs: Sequence[TensorSpec], out: Mapping[str, np.ndarray]
) -> None:
    """Overwrite ``out`` with the mean of ``payloads``: summed in the given
    order, then divided, so it is bit-identical wherever it runs.

    Every payload is validated and decoded before ``out`` is touched, so one
    bad payload raises ``PayloadError`` with ``out`` as it was; no payloads
    raise ValueError (their mean is undefined).
    """
    if not payloads:
        raise ValueError("the mean of no payloads is undefined")
    decoded = [_decoded(payload, specs) for payload in payloads]
    for spec in specs:
        out[spec.name].fill(0)
    for one in decoded:
        _add_decoded(one, specs, out)
    divisor = np.float32(len(payloads))
    for spec in specs:
        out[spec.name] /= divisor


def decode_mean(
    payloads: Sequence[np.ndarray], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """The mean of several ranks' payloads, keyed by name (see ``mean_into``)."""
    out = _zeros(specs)
    mean_into(payloads, specs, out)
    return out


__all__ = [
    "HEADER_BYTES",
    "Encoded",
    "accumulate",
    "decode",
    "decode_mean",
    "encode",
    "encode_counted",
    "encode_void",
    "mean_into",
    "restore_residues",
]
