"""Allgatherv with unequal and zero-length payloads; identical decoded means everywhere."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from verdict import Verdict

from adacomp_mpi import TensorSpec, decode_mean, encode, make_state
from adacomp_mpi.dist.buffer import GradientBuffer
from adacomp_mpi.dist.communicator import MpiCommunicator
from adacomp_mpi.dist.exchange import AdaCompExchange, DenseExchange

SPECS = [
    TensorSpec("conv", 4_999, "conv", 50),
    TensorSpec("fc", 20_011, "fc", 500),
    TensorSpec("bias", 7, "other", 500, compress=False),
]


def payload_pattern(rank: int) -> np.ndarray:
    """Rank 1 sends nothing; the others send very different sizes."""
    size = 0 if rank == 1 else 1 + 100_000 * rank**2 + 13 * rank
    return (np.arange(size) * (rank + 3) % 251).astype(np.uint8)


def rank_grads(rank: int, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([rank, step])
    return {s.name: rng.standard_normal(s.numel).astype(np.float32) * (rank + 1) for s in SPECS}


def rank_buffer(rank: int, step: int) -> GradientBuffer:
    """The same gradients in the flat buffer the exchanges work on."""
    buffer = GradientBuffer.zeros(SPECS)
    for name, grad in rank_grads(rank, step).items():
        buffer.views[name][...] = grad
    return buffer


def digest(arrays: dict[str, np.ndarray]) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays.values())).hexdigest()


def main() -> None:
    comm = MpiCommunicator()
    verdict = Verdict()

    gathered = comm.allgatherv(payload_pattern(comm.rank))
    verdict.check(len(gathered) == comm.size, "wrong number of payloads")
    for rank, payload in enumerate(gathered):
        verdict.check(np.array_equal(payload, payload_pattern(rank)), f"payload {rank} differs")

    exchange = AdaCompExchange(comm=comm, state=make_state(SPECS))
    reference_states = [make_state(SPECS) for _ in range(comm.size)]
    for step in range(4):
        buffer = rank_buffer(comm.rank, step)
        exchange.average(buffer, dense=step == 0)
        grads = dict(buffer.views)
        digests = comm.allgather_object(digest(grads))
        verdict.check(len(set(digests)) == 1, f"step {step}: ranks decoded different means")
        # Every rank can replay every rank's encoder; the mean must match bit for bit.
        payloads = [
            encode(rank_grads(r, step), reference_states[r], dense=step == 0)
            for r in range(comm.size)
        ]
        expected = decode_mean(payloads, SPECS)
        verdict.check(digest(expected) == digest(grads), f"step {step}: mean != replayed mean")

    dense = DenseExchange(comm=comm, state=make_state(SPECS))
    buffer = rank_buffer(comm.rank, 99)
    dense.average(buffer)
    grads = dict(buffer.views)
    exact = {
        s.name: np.mean([rank_grads(r, 99)[s.name] for r in range(comm.size)], axis=0)
        for s in SPECS
    }
    for got, want in zip(grads.values(), exact.values(), strict=True):
        verdict.check(np.allclose(got, want, rtol=1e-5, atol=1e-6), "dense mean is wrong")
    verdict.check(len(set(comm.allgather_object(digest(grads)))) == 1, "dense means differ")
    verdict.finish()


if __name__ == "__main__":
    main()
