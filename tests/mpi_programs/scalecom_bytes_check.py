"""Fixed-count scalecom under mpiexec: the bytes per rank per step are the
same at every step (and, compared by the test across world sizes, at every
N), replicas stay identical, and error feedback is exact per rank at beta 1.
Prints "BYTES <rule> <received per rank> <max sent>" from rank 0 for each rule."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from verdict import Verdict

from adacomp_mpi import TensorSpec, make_state
from adacomp_mpi.codec.shared_selection import ScaleComConfig, SharedSelection, fixed_count
from adacomp_mpi.dist.buffer import GradientBuffer
from adacomp_mpi.dist.communicator import MpiCommunicator
from adacomp_mpi.dist.scalecom import ScaleComExchange

SPECS = [
    TensorSpec("conv", 4_999, "conv", 50),
    TensorSpec("fc", 20_011, "fc", 500),
    TensorSpec("bias", 7, "other", 500, compress=False),
]
STEPS = 6


def rank_grads(rank: int, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([rank, step, 7])
    scale = 10.0 ** (step % 3 - 1)  # the adaptive rule's count would move with this
    return {s.name: (rng.standard_normal(s.numel) * scale).astype(np.float32) for s in SPECS}


def run(rule: str, verdict: Verdict, comm: MpiCommunicator) -> tuple[set, set]:
    selection = SharedSelection(rule)
    state = make_state(SPECS, ScaleComConfig(shared_selection=selection))
    exchange = ScaleComExchange(comm=comm, state=state)
    received, max_sent = set(), set()
    for step in range(STEPS):
        grads = rank_grads(comm.rank, step)
        buffer = GradientBuffer.zeros(SPECS)
        for name, grad in grads.items():
            buffer.views[name][...] = grad
        before = [r.copy() for r in state.residues]
        traffic = exchange.average(buffer)
        verdict.check(traffic.applied, f"{rule} step {step}: not applied")
        received.add(traffic.received)
        max_sent.add(max(traffic.sizes))
        mean = b"".join(buffer.views[s.name].tobytes() for s in SPECS)
        digests = comm.allgather_object(hashlib.sha256(mean).hexdigest())
        verdict.check(len(set(digests)) == 1, f"{rule} step {step}: ranks differ")
        for index in range(2):  # R_new + c == R + dW with c = G at the shared positions
            spec = SPECS[index]
            accumulated = before[index] + grads[spec.name]
            sent = np.flatnonzero(buffer.views[spec.name])
            if rule == "fixed":
                want = fixed_count(
                    spec.numel, bin_size=spec.bin_size, per_bin=selection.count_for(spec)
                )
                verdict.check(sent.size == want, f"step {step}: {sent.size} sent, not {want}")
            rest = np.ones(spec.numel, np.bool_)
            rest[sent] = False
            residue = state.residues[index]
            verdict.check(
                not residue[sent].any() and np.array_equal(residue[rest], accumulated[rest]),
                f"{rule} step {step}: error feedback is not exact on {spec.name}",
            )
    return received, max_sent


def main() -> None:
    comm = MpiCommunicator()
    verdict = Verdict()
    for rule in ("fixed", "adaptive"):
        received, max_sent = run(rule, verdict, comm)
        if rule == "fixed":
            verdict.check(len(received) == 1 and len(max_sent) == 1, f"bytes move: {received}")
        if comm.rank == 0:
            print(f"BYTES {rule} {sorted(received)} {sorted(max_sent)}", flush=True)
    verdict.finish()


if __name__ == "__main__":
    main()
