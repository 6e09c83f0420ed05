"""Which samples each rank sees: a per-epoch shuffle shared by all ranks."""

from __future__ import annotations

import numpy as np


def epoch_shard(num_samples: int, *, rank: int, size: int, seed: int, epoch: int) -> np.ndarray:
    """This rank's sample indices for ``epoch``.

    All ranks draw the same permutation (seeded by seed and epoch) and take
    equal, disjoint slices of it; the remainder (< size samples) is dropped so
    that every rank runs the same number of steps and no collective waits.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    per_rank = num_samples // size
    return order[rank * per_rank : (rank + 1) * per_rank]


def batches(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches; the last one may be shorter (same on every rank)."""
    return [indices[i : i + batch_size] for i in range(0, indices.size, batch_size)]


def eval_shard(num_samples: int, *, rank: int, size: int) -> np.ndarray:
    """Strided split of the test set: every sample evaluated exactly once."""
    return np.arange(rank, num_samples, size)
