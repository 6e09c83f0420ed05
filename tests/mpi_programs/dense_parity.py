"""Dense mode equals plain SGD on the union of all ranks' batches (docs/CODEC.md,
invariant 5), and AdaComp keeps every replica bit-identical after many steps (invariant 2)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from verdict import Verdict

from adacomp_mpi.dist.communicator import MpiCommunicator
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.gradients import parameter_digest
from adacomp_mpi.train.sharding import batches, epoch_shard
from adacomp_mpi.train.tasks import TASKS

STEPS = 12
BATCH = 8


def union_rows(num_samples: int, size: int, step: int) -> np.ndarray:
    """What all ranks together see at ``step`` of epoch 0, in rank order."""
    shards = [epoch_shard(num_samples, rank=r, size=size, seed=0, epoch=0) for r in range(size)]
    return np.concatenate([batches(s, BATCH)[step] for s in shards])


def main() -> None:
    comm = MpiCommunicator()
    verdict = Verdict()
    for compression in ("none", "adacomp"):
        config = TrainConfig(compression=compression, batch_size=BATCH, lr=0.1, momentum=0.9)
        trainer = build_trainer(config, comm, torch.device("cpu"))
        reference = copy.deepcopy(trainer.model)
        optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
        shard = epoch_shard(
            len(trainer.dataset.x_train), rank=comm.rank, size=comm.size, seed=0, epoch=0
        )
        for step, rows in enumerate(batches(shard, BATCH)[:STEPS]):
            trainer.train_step(rows)
            if compression == "none":
                union = union_rows(len(trainer.dataset.x_train), comm.size, step)
                x = torch.from_numpy(trainer.dataset.x_train[union])
                y = torch.from_numpy(trainer.dataset.y_train[union])
                optimizer.zero_grad()
                TASKS["classify"](reference(x), y).loss.backward()
                optimizer.step()
        digests = comm.allgather_object(parameter_digest(trainer.model))
        verdict.check(len(set(digests)) == 1, f"{compression}: replicas differ after {STEPS} steps")
        if compression == "none":
            for got, want in zip(trainer.model.parameters(), reference.parameters(), strict=True):
                close = torch.allclose(got, want, rtol=1e-4, atol=1e-6)
                verdict.check(close, "dense training differs from plain averaged SGD")
    verdict.finish()


if __name__ == "__main__":
    main()
