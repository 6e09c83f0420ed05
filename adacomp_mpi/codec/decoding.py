"""Decoding: payloads back to dense float32 tensors, one or the mean of many.

Every decoder validates a whole payload before it writes anything, so a bad
payload (truncated, corrupted, a NaN or infinity in a dense record or the
scale) raises ``PayloadError`` and leaves its output as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .indexcoding import decode_indices
from .selection import signed_scale
from .specs import TensorSpec
from .state import CodecState
from .wire import Positions, Record, parse_payload

Decoded = list[tuple[Record, Positions]]


def _decoded(
    payload: np.ndarray, specs: Sequence[TensorSpec], known: Sequence[Positions] | None = None
) -> Decoded:
    """Parse and decode every record first, so nothing is written for a bad
    payload. ``known``: the positions of each record, when the encoder that
    made this payload gave them (their index streams are then not decoded)."""
    records = parse_payload(payload, specs)
    if known:  # () from an Encoded made without them: decode as any other
        return list(zip(records, known, strict=True))
    return [
        (record, decode_indices(record.coded, count=record.sent, numel=spec.numel))
        if record.coded is not None
        else (record, ())
        for record, spec in zip(records, specs, strict=True)
    ]


def _add_sparse(
    record: Record, positions: Positions, target: np.ndarray, *, divisor: int = 1
) -> None:
    """target[i] += +-scale / divisor at the sent positions (unique, so ``add.at``
    is exact: it is also NumPy 2's fastest scatter-add, ahead of ``target[i] += v``)."""
    if not positions:
        return
    indices, negative = positions
    scale = np.float32(record.scale) / np.float32(divisor)
    np.add.at(target, indices, signed_scale(negative, scale))


def _add_record(record: Record, positions: Positions, target: np.ndarray) -> None:
    if record.dense is not None:
        target += record.dense
    else:
        _add_sparse(record, positions, target)


def accumulate(
    payload: np.ndarray, specs: Sequence[TensorSpec], out: Mapping[str, np.ndarray]
) -> None:
    """Add a payload's decoded tensors into ``out`` ({name: flat float32 array});
    ``out`` is untouched when the payload is bad (``PayloadError``)."""
    for (record, positions), spec in zip(_decoded(payload, specs), specs, strict=True):
        _add_record(record, positions, out[spec.name])


def restore_residues(payload: np.ndarray, state: CodecState) -> None:
    """Undo a step this rank encoded but nobody applied: put what it sent back
    into the residues (R = G - q becomes G again), so no gradient mass is lost.
    With momentum correction, a sparsely sent tensor's velocity is unmasked and
    a dense one's goes back to before the step (``Velocities.undo``); Adam
    preconditioning's second moments and step count go back to before it."""
    decoded = _decoded(payload, state.specs)
    for (record, positions), residue in zip(decoded, state.residues, strict=True):
        if record.coded is not None:
            _add_sparse(record, positions, residue)
    if state.velocities is not None:
        state.velocities.undo()
    if state.second_moments is not None:
        state.second_moments.undo()


def _zeros(specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    return {spec.name: np.zeros(spec.numel, np.float32) for spec in specs}


def decode(payload: np.ndarray, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Decode one payload into dense flat float32 arrays keyed by name."""
    out = _zeros(specs)
    accumulate(payload, specs, out)
    return out


def mean_into(
    payloads: Sequence[np.ndarray],
    specs: Sequence[TensorSpec],
    out: Mapping[str, np.ndarray],
    *,
    known: Mapping[int, Sequence[Positions]] | None = None,
) -> None:
    """Overwrite ``out`` with the mean of ``payloads``, bit-identical wherever
    it runs: every rank adds the same terms in the given order.

    The mean is the sum divided by N. With N a power of two, dividing each
    +-scale by N first gives exactly the same floats, so a tensor every
    payload sent sparsely gets +-scale / N at each sent position and no pass
    over the whole tensor to divide it. ``known``: {index into ``payloads``: that payload's
    positions from its encoder (``Encoded.positions``)}, this rank's own, so
    only the other ranks' index streams are decoded.

    Every payload is validated and decoded before ``out`` is touched, so one
    bad payload raises ``PayloadError`` with ``out`` as it was; no payloads
    raise ValueError (their mean is undefined).
    """
    if not payloads:
        raise ValueError("the mean of no payloads is undefined")
    known = known or {}
    decoded = [_decoded(payload, specs, known.get(i)) for i, payload in enumerate(payloads)]
    count = len(payloads)
    exact_parts = count & (count - 1) == 0  # x / count is exact, and so sum(x / count)
    for index, spec in enumerate(specs):
        target = out[spec.name]
        target.fill(0)
        terms = [one[index] for one in decoded]
        if not exact_parts or any(record.dense is not None for record, _ in terms):
            for record, positions in terms:
                _add_record(record, positions, target)
            target /= np.float32(count)
        else:
            for record, positions in terms:
                _add_sparse(record, positions, target, divisor=count)


def decode_mean(
    payloads: Sequence[np.ndarray], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """The mean of several ranks' payloads, keyed by name (see ``mean_into``)."""
    out = _zeros(specs)
    mean_into(payloads, specs, out)
    return out
