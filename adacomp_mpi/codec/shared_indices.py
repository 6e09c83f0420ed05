"""Shared-index compression (ScaleCom, Chen et al., NeurIPS 2020), pure NumPy.

One rank per step, the leader (exchange count mod world size, so it rotates),
runs a bin-local selection (``shared_selection``) on its own accumulated gradient; its
positions are shared with every rank, every rank contributes its *own*
accumulated values at them, and one Allreduce sums the contributions. Per
compressed tensor, per rank r, per step:

    G_r   = R_r + dW_r                    (every rank, into the spare buffer)
    I     = the leader's positions in G_leader (shared_selection.py: the top M
            |G| per bin of L_T, or AdaComp's |H| >= bin max, G != 0)
    c_r   = G_r[I]                        (rounded to the value type: fp32 or fp16)
    mean  = (sum over ranks of c_r) / N   at I, 0 elsewhere
    R_r  <- (1 - beta) R_r + beta (G_r - c_r)   beta = 1: plain error feedback

With beta = 1 error feedback is exact per rank: R_new + c == R + dW, bit for
bit, since G_r[I] - c_r is computed exactly. Tensors AdaComp sends dense go
whole into the same Allreduce; their residue is unused, as in AdaComp.

Nothing here touches a residue until ``commit``: the new residues are built
in the workspace spares, so a step some rank voids leaves every state as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .finite import all_finite
from .selection import NonFiniteError
from .shared_selection import selection_of
from .specs import TensorSpec
from .state import CodecState

VALUE_TYPES: dict[str, type[np.floating]] = {"fp32": np.float32, "fp16": np.float16}
FLAG_BITS = 24  # void ranks per flag element: float32 holds integers below 2**24 exactly


def leader_for(exchanges: int, size: int) -> int:
    """The rank whose selection every rank uses at this exchange."""
    return exchanges % size


@dataclass(frozen=True)
class Contribution:
    """One rank's share of the Allreduce: its values at the shared positions
    (in the value type) and its dense tensors (float32), each concatenated in
    layout order."""

    values: np.ndarray
    dense: np.ndarray


def _compressed(state: CodecState) -> list[int]:
    return [index for index, spec in enumerate(state.specs) if spec.compress]


def _input(state: CodecState, index: int, grad: np.ndarray) -> np.ndarray:
    """What the codec accumulates for tensor ``index``: dW, or with momentum
    correction the new local velocity u = m u + dW (``velocity``), or with Adam
    preconditioning dW / (sqrt(v) + eps) (``preconditioner``), once per step."""
    flat = np.ascontiguousarray(grad, np.float32).reshape(-1)
    if state.second_moments is not None:
        return state.second_moments.precondition(index, flat)
    return flat if state.velocities is None else state.velocities.advance(index, flat)


def dense_input(grads: Mapping[str, np.ndarray], state: CodecState) -> np.ndarray:
    """A dense warm-up step's contribution: every tensor's dW (or u), flat."""
    return np.concatenate(
        [_input(state, index, grads[spec.name]) for index, spec in enumerate(state.specs)]
    )


def commit_dense(state: CodecState) -> None:
    """A dense step happened: residues untouched, new velocities and second
    moments (if any) take over."""
    _commit_local(state)


def _commit_local(state: CodecState) -> None:
    if state.velocities is not None:
        state.velocities.commit()
    if state.second_moments is not None:
        state.second_moments.commit()


def accumulate(grads: Mapping[str, np.ndarray], state: CodecState, *, leader: bool) -> list:
    """G = R + dW of every compressed tensor into its spare buffer; on the
    leader also its positions under the config's selection rule
    (``shared_selection``: fixed M per bin, or AdaComp's adaptive rule), in
    ``compressed_specs`` order.

    Raises NonFiniteError when some G holds a NaN or an infinity; the
    residues are only read.
    """
    selection = selection_of(state.config)
    positions = []
    for index in _compressed(state):
        spec = state.specs[index]
        grad = _input(state, index, grads[spec.name])
        spare = state.workspace.spare(index, spec.numel)
        residue = state.residues[index]
        if leader and spec.numel:
            found = selection.select(residue, grad, spec=spec, workspace=state.workspace, out=spare)
            positions.append(found)
        else:
            with np.errstate(over="ignore"):
                np.add(residue, grad, out=spare)
            if not all_finite(spare):
                raise NonFiniteError(f"R + dW of {spec.name!r} is not finite")
            if leader:
                positions.append(np.zeros(0, np.int64))
    return positions


def contribution(
    grads: Mapping[str, np.ndarray],
    state: CodecState,
    positions: Sequence[np.ndarray],
    *,
    values: str = "fp32",
) -> Contribution:
    """This rank's accumulated values at the shared positions, and its dense
    tensors; call after ``accumulate`` (the values come from the spares)."""
    parts, dense = [], []
    shared = iter(positions)
    for index, spec in enumerate(state.specs):
        if spec.compress:
            spare = state.workspace.spare(index, spec.numel)
            parts.append(spare[next(shared)])
        else:
            dense.append(_input(state, index, grads[spec.name]).copy())
    cat = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    flat = np.concatenate(dense) if dense else np.zeros(0, np.float32)
    return Contribution(cat.astype(VALUE_TYPES[values]), flat)


def value_count(positions: Sequence[np.ndarray]) -> int:
    return int(sum(p.size for p in positions))


def dense_count(specs: Sequence[TensorSpec]) -> int:
    return int(sum(spec.numel for spec in specs if not spec.compress))


def write_mean(
    summed: Contribution,
    positions: Sequence[np.ndarray],
    specs: Sequence[TensorSpec],
    out: Mapping[str, np.ndarray],
    *,
    size: int,
) -> None:
    """Overwrite ``out`` with the mean: the sums divided by ``size`` at the
    shared positions, zero elsewhere; dense tensors whole. The same sums give
    the same bits on every rank."""
    divisor = np.float32(size)
    mean_values = np.divide(summed.values.astype(np.float32), divisor)
    mean_dense = np.divide(summed.dense, divisor)
    value_at = dense_at = 0
    shared = iter(positions)
    for spec in specs:
        target = out[spec.name]
        if spec.compress:
            where = next(shared)
            target.fill(0)
            target[where] = mean_values[value_at : value_at + where.size]
            value_at += where.size
        else:
            target[...] = mean_dense[dense_at : dense_at + spec.numel]
            dense_at += spec.numel


def commit(
    state: CodecState, positions: Sequence[np.ndarray], sent: np.ndarray, *, beta: float = 1.0
) -> None:
    """The step happened: R <- (1 - beta) R + beta (G - c) for every compressed
    tensor, ``sent`` being this rank's contribution c (any value type)."""
    contributed = np.asarray(sent).astype(np.float32)
    value_at = 0
    for index, where in zip(_compressed(state), positions, strict=True):
        spare = state.workspace.spare(index, state.specs[index].numel)
        spare[where] -= contributed[value_at : value_at + where.size]  # G - c
        value_at += where.size
        if beta != 1.0:
            spare *= np.float32(beta)
            spare += np.float32(1.0 - beta) * state.residues[index]
        state.residues[index] = state.workspace.swap(index, state.residues[index])
        if state.velocities is not None:  # masking: a sent element's momentum restarts
            state.velocities.mask(index, where)
    _commit_local(state)


def void_flags(*, rank: int, size: int, void: bool) -> np.ndarray:
    """This rank's share of the void flags: bit ``rank % 24`` of element
    ``rank // 24`` (float32 sums of distinct powers of two stay exact)."""
    flags = np.zeros(-(-size // FLAG_BITS), np.float32)
    if void:
        flags[rank // FLAG_BITS] = np.float32(1 << (rank % FLAG_BITS))
    return flags


def voided_ranks(summed_flags: np.ndarray) -> tuple[int, ...]:
    """The ranks whose flags are set in the summed flag elements."""
    ranks = []
    for group, value in enumerate(np.asarray(summed_flags, np.float64)):
        bits = int(value) if np.isfinite(value) else 0
        ranks += [group * FLAG_BITS + b for b in range(FLAG_BITS) if bits >> b & 1]
    return tuple(ranks)


__all__ = [
    "VALUE_TYPES",
    "Contribution",
    "accumulate",
    "commit",
    "commit_dense",
    "contribution",
    "dense_count",
    "dense_input",
    "leader_for",
    "value_count",
    "void_flags",
    "voided_ranks",
    "write_mean",
]
