"""Simulate N ranks in one process (no MPI): how well one leader's selection
serves everyone, and what it does to accuracy, for N far beyond this machine.

Each simulated rank has its own codec state and its own shard of a real
dataset; every step each computes a real gradient of the same real model on
its batch. Per step and mode:

* ``scalecom``: every rank runs the leader's rule (``--selection``: fixed M
  per bin, or AdaComp's adaptive rule) on its own accumulated
  gradient too (measurement only); the leader's (step mod N) positions are
  used by all. Recorded: the *index overlap* |own ∩ leader| / |own| and the
  *mass overlap* (the share of sum |G_r| over own positions that the leader's
  positions also cover), mean over the non-leader ranks, all compressed tensors;
* ``adacomp``: each rank's AdaComp payload, decoded and averaged (Allgatherv);
* ``dense``: the mean of the raw gradients.

The mean goes into the model's gradients and one SGD-momentum step follows,
as in the trainer (identical replicas: one model suffices). At the end, test
accuracy on the whole test split.

    .venv/bin/python scripts/sim_scalecom.py --ranks 2,8,32,64 --steps 150 --selection adaptive
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from adacomp_mpi.codec.api import decode_mean, encode
from adacomp_mpi.codec.shared_indices import accumulate, commit, contribution
from adacomp_mpi.codec.shared_selection import SELECTION_RULES, ScaleComConfig, SharedSelection
from adacomp_mpi.codec.specs import CompressionPolicy
from adacomp_mpi.codec.state import make_state
from adacomp_mpi.datasets import load_dataset
from adacomp_mpi.models import ModelInputs, build_model
from adacomp_mpi.train.layers import gradient_specs

REPO = Path(__file__).resolve().parents[1]


def _gradient(model, params, specs, x, y) -> dict[str, np.ndarray]:
    model.zero_grad(set_to_none=False)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return {
        s.name: p.grad.detach().numpy().reshape(-1).copy()
        for s, p in zip(specs, params, strict=True)
    }


def _overlap(states, grads, leader_positions, leader: int) -> tuple[float, float]:
    """Index and mass overlap of each non-leader's own selection with the leader's."""
    index_hits = index_total = mass_hits = mass_total = 0.0
    for rank, (state, grad) in enumerate(zip(states, grads, strict=True)):
        if rank == leader:
            continue
        own = accumulate(grad, state, leader=True)  # G into the spares, own positions
        compressed = [i for i, s in enumerate(state.specs) if s.compress]
        for index, mine, theirs in zip(compressed, own, leader_positions, strict=True):
            accumulated = np.abs(state.workspace.spare(index, state.specs[index].numel))
            shared = np.intersect1d(mine, theirs, assume_unique=True)
            index_hits += shared.size
            index_total += mine.size
            mass_hits += float(accumulated[shared].sum())
            mass_total += float(accumulated[mine].sum())
    return index_hits / max(index_total, 1), mass_hits / max(mass_total, 1e-30)


def _scalecom_mean(states, grads, step: int) -> tuple[dict[str, np.ndarray], tuple]:
    n = len(states)
    leader = step % n
    positions = accumulate(grads[leader], states[leader], leader=True)
    overlap = _overlap(states, grads, positions, leader) if n > 1 else (1.0, 1.0)
    parts = [contribution(g, s, positions) for s, g in zip(states, grads, strict=True)]
    total = sum(p.values for p in parts[1:]) + parts[0].values
    dense = sum(p.dense for p in parts[1:]) + parts[0].dense
    for state, part in zip(states, parts, strict=True):
        commit(state, positions, part.values)
    mean, at, dense_at = {}, 0, 0
    shared = iter(positions)
    for spec in states[0].specs:
        if spec.compress:
            where = next(shared)
            mean[spec.name] = np.zeros(spec.numel, np.float32)
            mean[spec.name][where] = total[at : at + where.size] / np.float32(n)
            at += where.size
        else:
            mean[spec.name] = dense[dense_at : dense_at + spec.numel] / np.float32(n)
            dense_at += spec.numel
    density = at / sum(s.numel for s in states[0].specs if s.compress)
    return mean, (*overlap, density)


def _adacomp_mean(states, grads, step: int) -> tuple[dict[str, np.ndarray], tuple]:
    payloads = [encode(g, s) for s, g in zip(states, grads, strict=True)]
    return decode_mean(payloads, states[0].specs), ()


def _dense_mean(states, grads, step: int) -> tuple[dict[str, np.ndarray], tuple]:
    return {k: np.mean([g[k] for g in grads], axis=0, dtype=np.float32) for k in grads[0]}, ()


SHOWN = ("index_overlap", "mass_overlap", "density")
MEANS = {"scalecom": _scalecom_mean, "adacomp": _adacomp_mean, "dense": _dense_mean}


def simulate(mode: str, ranks: int, steps: int, *, dataset, model_name: str, batch: int,
             lr: float, seed: int, selection: str = "fixed") -> dict:  # fmt: skip
    torch.manual_seed(seed)
    inputs = ModelInputs(dataset.input_shape, dataset.num_classes, dataset.task)
    model = build_model(model_name, inputs, {})
    specs, params = gradient_specs(model, CompressionPolicy())
    config = ScaleComConfig(shared_selection=SharedSelection(selection))
    states = [make_state(specs, config) for _ in range(ranks)]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    x_train = torch.from_numpy(dataset.x_train)
    y_train = torch.from_numpy(dataset.y_train).long()
    order = np.random.default_rng(seed).permutation(len(x_train))
    shards = [order[r::ranks] for r in range(ranks)]
    stats, started = [], time.perf_counter()
    for step in range(steps):
        grads = []
        for shard in shards:
            rows = shard[(step * batch) % (len(shard) - batch) :][:batch]
            grads.append(_gradient(model, params, specs, x_train[rows], y_train[rows]))
        mean, extra = MEANS[mode](states, grads, step)
        for spec, param in zip(specs, params, strict=True):
            param.grad.copy_(torch.from_numpy(mean[spec.name]).view_as(param))
        optimizer.step()
        if extra:
            stats.append(extra)
    with torch.no_grad():
        logits = model(torch.from_numpy(dataset.x_test))
        accuracy = float((logits.argmax(1).numpy() == dataset.y_test).mean())
    row = {"mode": mode, "ranks": ranks, "steps": steps, "test_accuracy": accuracy,
           "seconds": time.perf_counter() - started}  # fmt: skip
    if stats:
        index, mass, density = np.mean(stats, axis=0)
        row |= {"index_overlap": index, "mass_overlap": mass, "density": density}
    return row


@click.command()
@click.option("--ranks", default="2,8,32,64")
@click.option("--modes", default="dense,adacomp,scalecom")
@click.option("--steps", type=click.IntRange(min=1), default=150)
@click.option("--batch-size", type=click.IntRange(min=1), default=16)
@click.option("--lr", type=float, default=0.01)
@click.option("--model", default="mlp")
@click.option("--dataset", default="fashion_mnist")
@click.option("--seed", type=int, default=0)
@click.option("--selection", type=click.Choice(sorted(SELECTION_RULES)), default="fixed")
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
def main(ranks: str, modes: str, steps: int, batch_size: int, lr: float, model: str,
         dataset: str, seed: int, selection: str, json_out: Path | None) -> None:  # fmt: skip
    """Print one Markdown row per (mode, N)."""
    torch.set_num_threads(1)
    path = REPO / "data" / dataset
    data = load_dataset(dataset, path=path if path.is_dir() else None)
    rows = []
    click.echo("| mode | N | steps | test accuracy | index overlap | mass overlap | density |")
    click.echo("|---|---|---|---|---|---|---|")
    for n in (int(r) for r in ranks.split(",")):
        for mode in modes.split(","):
            row = simulate(mode, n, steps, dataset=data, model_name=model, batch=batch_size,
                           lr=lr, seed=seed, selection=selection)  # fmt: skip
            rows.append(row)
            shown = [f"{row[k]:.3f}" if k in row else "-" for k in SHOWN]
            click.echo(f"| {mode} | {n} | {steps} | {row['test_accuracy']:.4f} | "
                       + " | ".join(shown) + " |")  # fmt: skip
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
