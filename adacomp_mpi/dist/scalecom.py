"""Shared-index exchange (ScaleCom, Chen et al., NeurIPS 2020): per-rank
traffic that stays flat as ranks are added.

Per step, with the leader = exchange count mod N (the same on every rank, and
checkpointed with the codec state):

1. every rank forms G = R + dW; the leader also selects positions in its
   own G (``codec.shared_selection``: the top M per bin by default, or
   AdaComp's adaptive rule);
2. one broadcast from the leader: its positions (``codec.shared_wire``: bin
   offsets of fixed width for the fixed rule, gap-coded for the adaptive
   one), or a void message if its G is not finite;
3. one Allreduce (sum) of [every rank's own G at those positions, the dense
   tensors, the void flags] (with ``--scalecom-values fp16``: the values in a
   second, half-size float16 Allreduce);
4. the mean is the sum / N at the positions, 0 elsewhere; each rank keeps
   the rest as its residue (with ScaleCom's low-pass filter beta).

A void step (some rank's gradient or G not finite) is seen by every rank in
the flags of the same Allreduce: then no residue changes and the step is
skipped. A dense warm-up step is one Allreduce of the flat buffer and flags.
"""

from __future__ import annotations

import time

import numpy as np

from adacomp_mpi.codec.api import Encoded
from adacomp_mpi.codec.counters import KindCounters, StepCounts
from adacomp_mpi.codec.indexcoding import METHOD_NAMES
from adacomp_mpi.codec.selection import NonFiniteError
from adacomp_mpi.codec.shared_indices import (
    VALUE_TYPES,
    Contribution,
    accumulate,
    commit,
    commit_dense,
    contribution,
    dense_count,
    dense_input,
    leader_for,
    value_count,
    void_flags,
    voided_ranks,
    write_mean,
)
from adacomp_mpi.codec.shared_selection import selection_of
from adacomp_mpi.codec.shared_wire import (
    IndexMessage,
    compressed_specs,
    pack_positions,
    unpack_positions,
)
from adacomp_mpi.codec.state import CodecState

from .buffer import GradientBuffer
from .communicator import Communicator
from .traffic import StepTraffic

LENGTH_BYTES = 8  # the int64 length that precedes the index message (broadcast_bytes)


class ScaleComExchange:
    """Leader-chosen positions, one broadcast, one Allreduce per step."""

    collective = "broadcast+allreduce"

    def __init__(self, *, comm: Communicator, state: CodecState) -> None:
        self.comm = comm
        self.state = state

    def average(
        self,
        grads: GradientBuffer,
        *,
        dense: bool = False,
        finite: bool = True,
        encoded: Encoded | None = None,
    ) -> StepTraffic:
        """Replace ``grads`` with the global mean (``encoded`` is not used: this
        mode has no overlapped encoder). When any rank voids, ``grads`` and
        every residue stay as they were and ``applied`` is False."""
        leader = leader_for(self.state.exchanges, self.comm.size)
        self.state.exchanges += 1
        if dense:
            return self._dense(grads, finite)
        started = time.perf_counter()
        message, void = self._select(grads, finite, leader)
        selected = time.perf_counter()
        received = self.comm.broadcast_bytes(
            message.data if self.comm.rank == leader else None, root=leader
        )
        broadcast = time.perf_counter()
        shared = unpack_positions(received, self.state.specs)
        if shared is None:  # the leader voided (it knows): no positions, flags only
            shared = [np.zeros(0, np.int64) for _ in compressed_specs(self.state.specs)]
        if not void:
            mine = contribution(grads.views, self.state, shared, values=self._values)
        else:  # contribute zeros: only the flag counts
            mine = self._zeros(shared)
        flags = void_flags(rank=self.comm.rank, size=self.comm.size, void=void)
        gathered = time.perf_counter()
        summed, summed_flags, vector_bytes = self._allreduce(mine, flags)
        communicated = time.perf_counter()
        voided = voided_ranks(summed_flags)
        finite_sum = np.isfinite(summed.values).all() and np.isfinite(summed.dense).all()
        applied = not voided and bool(finite_sum)
        if applied:
            write_mean(summed, shared, self.state.specs, grads.views, size=self.comm.size)
            commit(self.state, shared, mine.values, beta=self.state.config.shared_beta)
        index_bytes = received.size + LENGTH_BYTES
        sizes = tuple(
            vector_bytes + (index_bytes if r == leader else 0) for r in range(self.comm.size)
        )
        return StepTraffic(
            sizes=sizes,
            applied=applied,
            counts=self._counts(shared, message if self.comm.rank == leader else None),
            voided_ranks=voided,
            seconds={
                "encode": (selected - started) + (gathered - broadcast),
                "communicate": (broadcast - selected) + (communicated - gathered),
                "decode": time.perf_counter() - communicated,
            },
            received=vector_bytes + (index_bytes if self.comm.size > 1 else 0),
        )

    @property
    def _values(self) -> str:
        return self.state.config.shared_values

    def _select(
        self, grads: GradientBuffer, finite: bool, leader: int
    ) -> tuple[IndexMessage, bool]:
        """G into the spares, and the leader's message of its positions; void
        if not finite (every rank, the leader included, decodes the message)."""
        is_leader = self.comm.rank == leader
        methods = METHOD_NAMES[self.state.config.index_coding]
        if finite:
            try:
                positions = accumulate(grads.views, self.state, leader=is_leader)
            except NonFiniteError:
                finite = False
        if not finite:
            void = pack_positions([], self.state.specs, methods=methods, void=True)
            return void, True
        if not is_leader:
            return IndexMessage(np.zeros(0, np.uint8)), False
        selection = selection_of(self.state.config)
        per_bin = [selection.count_for(spec) for spec in compressed_specs(self.state.specs)]
        message = pack_positions(positions, self.state.specs, methods=methods, per_bin=per_bin)
        return message, False

    def _zeros(self, shared: list[np.ndarray]) -> Contribution:
        return Contribution(
            np.zeros(value_count(shared), VALUE_TYPES[self._values]),
            np.zeros(dense_count(self.state.specs), np.float32),
        )

    def _allreduce(
        self, mine: Contribution, flags: np.ndarray
    ) -> tuple[Contribution, np.ndarray, int]:
        """Sum the contributions and flags over ranks: one float32 Allreduce,
        plus a float16 one for fp16 values; (sums, flags, bytes per rank)."""
        if mine.values.dtype == np.float32:
            vector = np.concatenate([mine.values, mine.dense, flags])
            self.comm.allreduce_sum(vector)
            values_end = mine.values.size
            dense_end = values_end + mine.dense.size
            summed = Contribution(vector[:values_end], vector[values_end:dense_end])
            return summed, vector[dense_end:], vector.nbytes
        values = mine.values.copy()
        rest = np.concatenate([mine.dense, flags])
        self.comm.allreduce_sum(values)
        self.comm.allreduce_sum(rest)
        summed = Contribution(values, rest[: mine.dense.size])
        return summed, rest[mine.dense.size :], values.nbytes + rest.nbytes

    def _dense(self, grads: GradientBuffer, finite: bool) -> StepTraffic:
        """A warm-up step: every tensor whole, residues untouched."""
        started = time.perf_counter()
        flags = void_flags(rank=self.comm.rank, size=self.comm.size, void=not finite)
        values = dense_input(grads.views, self.state) if finite else np.zeros_like(grads.flat)
        vector = np.concatenate([values, flags])
        self.comm.allreduce_sum(vector)
        communicated = time.perf_counter()
        voided = voided_ranks(vector[grads.flat.size :])
        applied = not voided and bool(np.isfinite(vector[: grads.flat.size]).all())
        if applied:
            np.divide(vector[: grads.flat.size], np.float32(self.comm.size), out=grads.flat)
            commit_dense(self.state)
        return StepTraffic(
            sizes=(vector.nbytes,) * self.comm.size,
            applied=applied,
            voided_ranks=voided,
            seconds={
                "encode": 0.0,
                "communicate": communicated - started,
                "decode": time.perf_counter() - communicated,
            },
            received=vector.nbytes,
        )

    def _counts(self, shared: list[np.ndarray], message: IndexMessage | None) -> StepCounts:
        """Per layer kind: what this rank put into the collectives (values for
        everyone; the index records on the leader, counted as coded bytes)."""
        counts: StepCounts = {}
        itemsize = np.dtype(VALUE_TYPES[self._values]).itemsize
        shared_at = 0
        for spec in self.state.specs:
            if spec.compress:
                sent = int(shared[shared_at].size)
                counters = KindCounters(
                    elements=spec.numel, sent=sent, record_bytes=sent * itemsize
                )
                if message is not None and message.record_bytes:
                    counters.record_bytes += message.record_bytes[shared_at]
                    counters.coded_sent = sent
                    counters.coded_bytes = message.coded_bytes[shared_at]
                shared_at += 1
            else:
                counters = KindCounters(
                    elements=spec.numel, sent=spec.numel, record_bytes=4 * spec.numel
                )
            counts.setdefault(spec.kind, KindCounters()).add(counters)
        return counts
