"""ScaleCom exchange under mpiexec: the rotating leader's positions, identical
means on every rank equal to an in-process replay of all ranks, exact error
feedback per rank, void steps (a non-leader, then the leader) that change
nothing, a dense warm-up step, and fp16 values."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from verdict import Verdict

from adacomp_mpi import TensorSpec, make_state
from adacomp_mpi.codec.shared_indices import accumulate, commit, contribution
from adacomp_mpi.codec.state import CodecConfig
from adacomp_mpi.dist.buffer import GradientBuffer
from adacomp_mpi.dist.communicator import MpiCommunicator
from adacomp_mpi.dist.scalecom import ScaleComExchange

SPECS = [
    TensorSpec("conv", 4_999, "conv", 50),
    TensorSpec("fc", 20_011, "fc", 500),
    TensorSpec("bias", 7, "other", 500, compress=False),
]
DENSE_STEP, VOID_STEP = 0, 3  # VOID_STEP: rank 1 voids; VOID_STEP + 1: the leader does


def rank_grads(rank: int, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([rank, step])
    shared = np.random.default_rng([99, step])  # similar gradients across ranks, as in training
    return {
        s.name: (shared.standard_normal(s.numel) + 0.5 * rng.standard_normal(s.numel)).astype(
            np.float32
        )
        for s in SPECS
    }


def buffer_of(grads: dict[str, np.ndarray]) -> GradientBuffer:
    buffer = GradientBuffer.zeros(SPECS)
    for name, grad in grads.items():
        buffer.views[name][...] = grad
    return buffer


def digest(arrays: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()


def replay(states: list, step: int, size: int, values: str) -> dict[str, np.ndarray]:
    """Every rank's step, in one process: the mean the exchange must give."""
    leader = step % size
    grads = [rank_grads(r, step) for r in range(size)]
    positions = accumulate(grads[leader], states[leader], leader=True)
    for r in range(size):
        if r != leader:
            accumulate(grads[r], states[r], leader=False)
    parts = [contribution(grads[r], states[r], positions, values=values) for r in range(size)]
    total_values = parts[0].values.astype(np.float32) * 0
    total_dense = parts[0].dense * 0
    for part in parts:  # the Allreduce of these small worlds sums in rank order
        total_values = total_values + part.values.astype(np.float32)
        total_dense = total_dense + part.dense
    for r in range(size):
        commit(states[r], positions, parts[r].values)
    mean, at = {}, 0
    for spec, where in zip([s for s in SPECS if s.compress], positions, strict=True):
        mean[spec.name] = np.zeros(spec.numel, np.float32)
        mean[spec.name][where] = total_values[at : at + where.size] / np.float32(size)
        at += where.size
    mean["bias"] = total_dense / np.float32(size)
    return mean


def run(values: str, verdict: Verdict, comm: MpiCommunicator) -> None:
    config = CodecConfig(shared_values=values)
    state = make_state(SPECS, config)
    exchange = ScaleComExchange(comm=comm, state=state)
    replica = [make_state(SPECS, config) for _ in range(comm.size)]
    for step in range(7):
        grads = rank_grads(comm.rank, step)
        buffer = buffer_of(grads)
        before = [r.copy() for r in state.residues]
        leader = step % comm.size
        voiding = step == VOID_STEP and comm.rank == 1
        voiding |= step == VOID_STEP + 1 and comm.rank == leader
        if voiding:
            buffer.views["fc"][3] = np.nan
        traffic = exchange.average(buffer, dense=step == DENSE_STEP, finite=not voiding)
        void_step = step in (VOID_STEP, VOID_STEP + 1)
        verdict.check(traffic.applied == (not void_step), f"{values} step {step}: applied wrong")
        if void_step:
            expected = (1,) if step == VOID_STEP else (leader,)
            verdict.check(traffic.voided_ranks == expected, f"step {step}: {traffic.voided_ranks}")
            same = all(np.array_equal(a, b) for a, b in zip(before, state.residues, strict=True))
            verdict.check(same, f"{values} step {step}: a void step changed a residue")
            continue
        mean = [buffer.views[s.name].copy() for s in SPECS]
        digests = comm.allgather_object(digest(mean))
        verdict.check(len(set(digests)) == 1, f"{values} step {step}: ranks differ")
        if step == DENSE_STEP:
            continue
        # MPI may sum in another order than the replay: positions exact, sums close.
        expected = replay(replica, step, comm.size, values)
        tolerance = 1e-6 if values == "fp32" else 2e-3  # of the largest mean element
        for spec, got in zip(SPECS, mean, strict=True):
            want = expected[spec.name]
            atol = tolerance * float(np.abs(want).max())
            verdict.check(
                np.array_equal(want != 0, got != 0) and np.allclose(got, want, 0, atol),
                f"{values} step {step}: {spec.name} mean != in-process replay",
            )
        # Exact error feedback per rank: new residue + what this rank sent == R + dW.
        sent_count = sum(int((m != 0).sum()) for m in mean[:2])
        verdict.check(sent_count > 0, f"step {step}: nothing was sent")
        for index in range(2):
            accumulated = before[index] + grads[SPECS[index].name]
            sent = accumulated - state.residues[index]
            verdict.check(
                np.array_equal(state.residues[index] + sent, accumulated)
                and bool((sent[mean[index] == 0] == 0).all()),
                f"{values} step {step}: error feedback is not exact",
            )
            verdict.check(
                np.array_equal(state.residues[index], replica[comm.rank].residues[index]),
                f"{values} step {step}: residue differs from the replay",
            )
    verdict.check(state.exchanges == 7, f"exchange count {state.exchanges}")


def main() -> None:
    comm = MpiCommunicator()
    verdict = Verdict()
    for values in ("fp32", "fp16"):
        run(values, verdict, comm)
    verdict.finish()


if __name__ == "__main__":
    main()
