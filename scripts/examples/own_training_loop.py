"""Your own PyTorch training loop, with gradients averaged over MPI ranks by AdaComp.

    mpiexec -n 2 .venv/bin/python scripts/examples/own_training_loop.py
    .venv/bin/python scripts/examples/own_training_loop.py          # one process

A plain loop (model, optimizer, data sharding are all yours); the only
additions are ``GradientAverager(model)``, ``averager.zero_grad()`` and
``if averager.synchronize(): optimizer.step()``. Rank 0 prints the test
accuracy, the compression ratio and whether every replica ended bit-identical.
(``mpiexec -n 2 python -m mpi4py script.py`` would also end every rank at once
if one of them raised.)
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import torch
from torch import nn

from adacomp_mpi.datasets import load_dataset
from adacomp_mpi.train.averager import GradientAverager


def parameter_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--compression", default="adacomp", choices=["adacomp", "none"])
    args = parser.parse_args()

    torch.set_num_threads(1)  # a tiny MLP: one thread per rank, so ranks do not fight for cores
    torch.manual_seed(1234)  # any seed: the averager broadcasts rank 0's weights
    data = load_dataset("digits")  # embedded UCI optdigits: 64 pixels, 10 classes
    model = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    averager = GradientAverager(model, compression=args.compression)  # collective
    rank, size = averager.comm.rank, averager.comm.size
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)

    for epoch in range(args.epochs):
        # Same permutation on every rank, then equal disjoint slices: every rank
        # must run the same number of steps, since synchronize() is a collective.
        order = np.random.default_rng([7, epoch]).permutation(len(x_train))
        per_rank = len(order) // size
        mine = torch.from_numpy(order[rank * per_rank : (rank + 1) * per_rank])
        model.train()
        for start in range(0, per_rank, args.batch_size):
            rows = mine[start : start + args.batch_size]
            averager.zero_grad()  # keeps every .grad a view into the flat buffer
            loss = loss_fn(model(x_train[rows]), y_train[rows])
            loss.backward()
            if averager.synchronize():  # .grad is now the mean over ranks
                optimizer.step()

    model.eval()  # replicas are identical: every rank may evaluate the whole test set
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_test))
        accuracy = float((logits.argmax(1) == torch.from_numpy(data.y_test)).float().mean())
    digests = averager.comm.allgather_object(parameter_sha256(model))
    if rank == 0:
        print(
            f"ranks: {size}  epochs: {args.epochs}  steps: {averager.steps}"
            f"  skipped: {averager.skipped_steps}"
        )
        print(f"test accuracy: {accuracy:.4f}")
        print(
            f"compression ratio: {averager.compression_ratio:.1f}x "
            f"({averager.bytes_sent} bytes sent by rank 0, {averager.dense_bytes} dense)"
        )
        print(f"replicas identical: {len(set(digests)) == 1} (sha256 {digests[0][:16]}...)")


if __name__ == "__main__":
    main()
