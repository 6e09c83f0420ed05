"""Milliseconds per training step, phase by phase, dense and AdaComp side by side.

One process (the one-rank communicator, so "communicate" is ~0 and what is
left is the work a rank does itself), Fashion-MNIST batches, MLPs and CNNs of
about 0.2 M, 2 M and 20 M parameters. For each model it times, in one run and
interleaved step by step so machine noise hits all alike:

  dense       --compression none (the baseline: Allreduce of the flat buffer)
  adacomp     AdaComp, encoding after backward (--overlap off)
  overlapped  AdaComp, encoding each gradient on a worker thread during backward
  auto        --overlap auto: times its first steps both ways, keeps the faster

and reports the median ms per phase, the step's ratio to dense, and the share
of encode work that backward hid: 1 - (encode time still waited for after
backward) / (encode time the worker spent). Torch gets one thread by default
so a second core is free for the worker (``--threads``).

A second table gives each model's encode floor: the rule's element-wise
passes alone, one NumPy call per tensor and pass (``_encode_floor_ms``), the
least a NumPy encoder can cost, next to the dense step.

    python scripts/bench_step.py                       # all six models
    python scripts/bench_step.py --models mlp-2m --steps 30
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import click
import numpy as np
import torch

from adacomp_mpi.datasets import load_dataset
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.report.schema import TIME_PHASES
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.overlap_choice import SAMPLES, WARMUP_STEPS
from adacomp_mpi.train.trainer import Trainer

# name -> (zoo model, --model-option pairs), sized for Fashion-MNIST's 1x28x28.
MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "mlp-0.2m": ("mlp", {}),
    "mlp-2m": ("mlp", {"hidden": "1536,512"}),
    "mlp-20m": ("mlp", {"hidden": "4096,4096"}),
    "cnn-0.2m": ("cnn", {}),
    "cnn-2m": ("cnn", {"channels": "64,128,256", "hidden": "256"}),
    "cnn-20m": ("cnn", {"channels": "128,256,512", "hidden": "2048"}),
}
SYSTEMS: dict[str, dict[str, object]] = {
    "dense": {"compression": "none"},
    "adacomp": {"compression": "adacomp", "overlap": "off"},
    "overlapped": {"compression": "adacomp", "overlap": "on"},
    "auto": {"compression": "adacomp", "overlap": "auto"},
}
# auto's trial times its first steps both ways; untimed warm-up covers it.
TRIAL_STEPS = 2 * (WARMUP_STEPS + SAMPLES)


@dataclass
class Timings:
    """Per-step seconds of one system on one model."""

    phases: dict[str, list[float]]
    steps: list[float]
    busy: float = 0.0  # the overlap worker's encode seconds over the timed steps

    def median_ms(self, phase: str) -> float:
        return 1000 * statistics.median(self.phases[phase])


def _trainers(name: str, *, data_path: Path | None, batch: int) -> dict[str, Trainer]:
    model, options = MODELS[name]
    base = TrainConfig(
        model=model,
        model_options=options,
        dataset="fashion_mnist",
        data_path=data_path,
        batch_size=batch,
        lr=0.01,
        stall_timeout=0,
    )
    comm, cpu = LocalCommunicator(), torch.device("cpu")
    return {
        system: build_trainer(replace(base, **changes), comm, cpu)
        for system, changes in SYSTEMS.items()
    }


def _time(trainers: dict[str, Trainer], *, steps: int, warmup: int, batch: int) -> dict:
    """Interleave the systems step by step over the same batches."""
    timings = {s: Timings({p: [] for p in TIME_PHASES}, []) for s in trainers}
    rng = np.random.default_rng(0)
    samples = len(next(iter(trainers.values())).dataset.x_train)
    for step in range(warmup + steps):
        rows = rng.choice(samples, batch, replace=False)
        for system, trainer in trainers.items():
            busy = trainer.overlap.busy_seconds if trainer.overlap else 0.0
            started = time.perf_counter()
            local, _ = trainer.train_step(rows)
            elapsed = time.perf_counter() - started
            if trainer.overlap_trial is not None:  # as the loop does, with one rank's time
                trainer.overlap_trial.observe(trainer.overlapping, sum(local.seconds.values()))
            if step < warmup:
                continue
            timing = timings[system]
            timing.steps.append(elapsed)
            for phase in TIME_PHASES:
                timing.phases[phase].append(local.seconds.get(phase, 0.0))
            if trainer.overlap:
                timing.busy += trainer.overlap.busy_seconds - busy
    return timings


def _rows(name: str, params: int, timings: dict[str, Timings]) -> list[str]:
    dense_step = statistics.median(timings["dense"].steps)
    rows = []
    for system, timing in timings.items():
        step = statistics.median(timing.steps)
        cells = [f"{timing.median_ms(p):.2f}" for p in TIME_PHASES]
        hidden = "-"
        if system in ("overlapped", "auto") and timing.busy > 0:
            waited = sum(timing.phases["encode"])
            hidden = f"{max(0.0, 1 - waited / timing.busy):.0%}"
        rows.append(
            f"| {name} | {params / 1e6:.2f} M | {system} | {' | '.join(cells)} | "
            f"{1000 * step:.2f} | {step / dense_step:.2f}x | {hidden} |"
        )
    return rows


def _encode_floor_ms(trainer: Trainer, *, repeats: int = 30) -> float:
    """The least NumPy work an AdaComp encode of this model can do: for every
    compressed tensor, one whole-tensor call per pass the rule needs
    (G = R + dW, |G|, bin maxima, H = G + dW, |H|, |H| >= gmax, positions),
    on preallocated arrays, so no block loop, Python overhead, scale, residue
    write or index coding. The best of ``repeats``, in ms.
    """
    state, views = trainer.exchange.state, trainer.bridge.buffer.views
    tensors = []
    for spec, residue in zip(state.specs, state.residues, strict=True):
        if not spec.compress:
            continue
        bins = -(-spec.numel // spec.bin_size)
        full = spec.numel // spec.bin_size  # whole bins: the broadcast compare
        work = [np.empty(spec.numel, np.float32) for _ in range(2)]
        mask = np.zeros(spec.numel, np.bool_)  # a short last bin's tail stays False
        starts = np.arange(0, spec.numel, spec.bin_size)
        grad = np.ascontiguousarray(views[spec.name]).reshape(-1)
        tensors.append(
            (residue, grad, work, mask, starts, np.empty(bins, np.float32), full, spec.bin_size)
        )
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for residue, grad, (g_acc, work), mask, starts, gmax, full, size in tensors:
            np.add(residue, grad, out=g_acc)
            np.abs(g_acc, out=work)
            np.maximum.reduceat(work, starts, out=gmax)
            np.abs(np.add(g_acc, grad, out=work), out=work)
            covered = full * size
            np.greater_equal(
                work[:covered].reshape(full, size),
                gmax[:full, None],
                out=mask[:covered].reshape(full, size),
            )
            np.flatnonzero(mask)
        best = min(best, time.perf_counter() - started)
    return 1000 * best


HEADER = (
    "| model | params | system | "
    + " | ".join(f"{p} ms" for p in TIME_PHASES)
    + " | step ms | vs dense | encode hidden |\n|"
    + "---|" * (len(TIME_PHASES) + 6)
)


FLOOR_HEADER = (
    "\nEncode floor (the rule's passes alone, one NumPy call per tensor and pass):\n\n"
    "| model | dense step ms | encode floor ms | dense step + floor, vs dense |\n|---|---|---|---|"
)


@click.command()
@click.option("--models", default=",".join(MODELS), help=f"Comma-separated: {', '.join(MODELS)}.")
@click.option("--steps", type=click.IntRange(min=3), default=40, help="Timed steps per system.")
@click.option("--warmup", type=click.IntRange(min=0), default=TRIAL_STEPS + 2)
@click.option("--batch-size", type=click.IntRange(min=1), default=16)
@click.option("--threads", type=click.IntRange(min=1), default=1, help="Torch threads.")
@click.option("--data-path", type=click.Path(exists=True, path_type=Path), default=None)
def main(
    models: str, steps: int, warmup: int, batch_size: int, threads: int, data_path: Path | None
) -> None:
    """Print the table (Markdown) for the chosen models."""
    torch.set_num_threads(threads)
    names = [n.strip() for n in models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {list(MODELS)}")
    load_dataset("fashion_mnist", path=data_path)  # fail early, with the loader's message
    click.echo(f"torch threads {threads}, batch {batch_size}, {steps} timed steps (median)\n")
    click.echo(HEADER)
    floors: dict[str, tuple[float, float]] = {}
    for name in names:
        trainers = _trainers(name, data_path=data_path, batch=batch_size)
        params = trainers["dense"].ledger.numel
        timings = _time(trainers, steps=steps, warmup=warmup, batch=batch_size)
        for row in _rows(name, params, timings):
            click.echo(row)
        floors[name] = (
            _encode_floor_ms(trainers["adacomp"]),
            1000 * statistics.median(timings["dense"].steps),
        )
        for trainer in trainers.values():
            if trainer.overlap:
                trainer.overlap.close()
    click.echo(FLOOR_HEADER)
    for name, (floor, dense_step) in floors.items():
        ratio = (dense_step + floor) / dense_step
        click.echo(f"| {name} | {dense_step:.2f} | {floor:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
