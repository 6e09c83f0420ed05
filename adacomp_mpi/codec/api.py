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

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .counters import KindCounters, StepCounts
from .decoding import accumulate, decode, decode_mean, mean_into, restore_residues
from .finite import all_finite
from .indexcoding import METHOD_NAMES, encode_indices
from .selection import NonFiniteError, select_and_update
from .specs import TensorSpec
from .state import CodecState
from .wire import HEADER_BYTES, RECORD_HEADER_BYTES, Positions, Record, pack_payload


@dataclass(frozen=True)
class Encoded:
    """One step's payload, what it holds per layer kind, and each record's
    positions as the encoder chose them (so this rank's own payload need not
    be decoded again: ``mean_into(..., known=...)``)."""

    payload: np.ndarray
    counts: StepCounts
    positions: tuple[Positions, ...] = ()


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


def _encode_tensor(
    state: CodecState, index: int, grad: np.ndarray, dense: bool
) -> tuple[Record, Positions]:
    """One tensor's record and its positions; a compressed tensor's new residue
    goes to its spare (and, with momentum correction, every tensor's new
    velocity to its own)."""
    spec = state.specs[index]
    if state.second_moments is not None:  # Adam preconditioning: g / (sqrt(s) + eps)
        grad = state.second_moments.precondition(index, grad)
    velocities = state.velocities  # with it, the codec sends u = m * u + g in place of g
    if dense or not spec.compress:
        if velocities is not None:
            grad = velocities.advance(index, grad)
        if not all_finite(grad):
            raise _not_finite(spec.name, grad)
        return Record(spec.numel, spec.numel, 0.0, dense=grad), ()
    velocity = None if velocities is None else velocities.deferred(index)
    bin_size = max(2, spec.bin_size // state.bin_divisor)
    try:
        selection = select_and_update(
            state.residues[index],
            grad,
            bin_size=bin_size,
            scale_rule=state.config.scale_rule,
            workspace=state.workspace,
            out=state.workspace.spare(index, spec.numel),
            velocity=velocity,
        )
    except NonFiniteError:
        raise _not_finite(spec.name, grad if velocity is None else velocity[1]) from None
    if velocities is not None:
        velocities.mask(index, selection.indices)
    coded = encode_indices(
        selection.indices,
        selection.negative,
        bin_size=bin_size,
        methods=METHOD_NAMES[state.config.index_coding],
    )
    record = Record(spec.numel, selection.count, float(selection.scale), coded=coded)
    if not selection.count:
        return record, ()
    # The indices may be a view of the workspace, which the next tensor reuses.
    return record, (selection.indices.copy(), selection.negative)


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
    records, positions, counts = [], [], {}
    for index, spec in enumerate(state.specs):
        grad = _flat_float32(spec.name, grads[spec.name], spec.numel)
        record, sent = _encode_tensor(state, index, grad, dense)
        _count(counts, spec, record)
        records.append(record)
        positions.append(sent)
    payload = pack_payload(records, state.specs)
    commit(state, dense=dense)
    return Encoded(payload, counts, tuple(positions))


def commit(state: CodecState, *, dense: bool) -> None:
    """Every tensor of the step was finite: the new residues (not after a
    dense step, which leaves them alone), velocities and second moments take over."""
    if not dense:
        residues = state.residues
        for index, spec in enumerate(state.specs):
            if spec.compress:
                residues[index] = state.workspace.swap(index, residues[index])
    if state.velocities is not None:
        state.velocities.commit()
    if state.second_moments is not None:
        state.second_moments.commit()


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


__all__ = [
    "HEADER_BYTES",
    "Encoded",
    "Positions",
    "accumulate",
    "decode",
    "decode_mean",
    "encode",
    "encode_counted",
    "encode_void",
    "mean_into",
    "restore_residues",
]
