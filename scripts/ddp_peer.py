"""The torch DDP peer: what users would run instead of adacomp-train, for comparison.

Trains the same model on the same data, in the same order, with the same optimizer as
``adacomp-train`` (it reuses the project's dataset loaders, model zoo, sharding, task
losses and optimizers), but averages gradients with plain PyTorch
DistributedDataParallel over torch.distributed (gloo backend, CPU) instead of AdaComp
over MPI. ``--mode`` picks the gradient communication:

  fp32      DDP as it ships: default buckets, allreduce overlapped with backward;
  fp16      DDP with PyTorch's ``fp16_compress_hook`` (buckets cast to fp16 on the wire);
  powersgd  DDP with PyTorch's ``powerSGD_hook`` (rank ``--powersgd-rank``, its own error
            feedback and warm start; plain allreduce for the first
            ``--powersgd-start-iter`` steps).

Like the trainer, every rank builds the model from ``--seed`` and DDP broadcasts rank 0's
parameters at construction; gradients are averaged (sum / world size). A standalone
benchmark script: the trainer never imports it.

Run it (one rank per core; the script sets ``torch.set_num_threads(1)`` unless
``--threads`` is given):

  torchrun --nproc-per-node 2 scripts/ddp_peer.py --dataset digits --mode powersgd

  mpiexec -n 2 -genv MASTER_ADDR 127.0.0.1 -genv MASTER_PORT 29500 \\
      .venv/bin/python scripts/ddp_peer.py --mode fp16

It reads the standard torch.distributed environment (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT); under mpiexec it falls back to the PMI_RANK / PMI_SIZE that MPICH's hydra
sets (or OMPI_COMM_WORLD_RANK / _SIZE); with none of them it runs as a single rank.
MASTER_ADDR defaults to 127.0.0.1 and MASTER_PORT to 29500. It does not use MPI itself.

On two network-namespace "hosts" (scripts/netns/twohost.sh), point MASTER_ADDR at rank
0's link address and set GLOO_SOCKET_IFNAME (read by gloo itself) to the link interface,
so gloo's traffic crosses the link:

  scripts/netns/twohost.sh mpiexec PREFIX -ppn 1 -n 2 -genv MASTER_ADDR 10.10.0.1 \\
      -genv MASTER_PORT 29500 -genv GLOO_SOCKET_IFNAME vnet0 \\
      .venv/bin/python scripts/ddp_peer.py --dataset fashion_mnist --epochs 1

Rank 0 writes OUTPUT_DIR/summary.json and OUTPUT_DIR/metrics.jsonl (one ``"eval"``
record per evaluation, every ``--eval-every`` steps or once per epoch) and prints one
line. Times: ``train_seconds`` runs from after DDP construction (the initial broadcast)
to the end of the last step, without evaluation time; ``wall_seconds`` is the whole run
(loading, start-up, evaluations). In eval records ``train_seconds`` is the time-to-
accuracy axis and ``wall_seconds`` counts since training started, evaluations included.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from adacomp_mpi.common.files import atomic_write_json, check_writable_dir
from adacomp_mpi.datasets import ArrayDataset, load_dataset
from adacomp_mpi.models import ModelInputs, build_model
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.gradients import parameter_digest
from adacomp_mpi.train.optim import OPTIMIZERS, OptimizerSettings
from adacomp_mpi.train.schedule import SCHEDULES, Schedule
from adacomp_mpi.train.sharding import batches, epoch_shard, eval_shard
from adacomp_mpi.train.tasks import TASKS
from adacomp_mpi.train.trainer import EVAL_BATCH  # the trainer's own evaluation batch

DEFAULTS = TrainConfig()
MODES = ("fp32", "fp16", "powersgd")
POWERSGD_BUCKET_MB = 25  # DDP's default bucket size, applied to the first bucket too
RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")
SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


@dataclass(frozen=True)
class Options:
    """The command line, resolved."""

    dataset: str
    data_path: Path | None
    model: str
    model_option: tuple[str, ...]  # KEY=VALUE sizes, as adacomp-train --model-option
    epochs: int
    max_steps: int | None
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    lr_schedule: str
    seed: int
    mode: str
    powersgd_rank: int
    powersgd_start_iter: int
    output_dir: Path
    eval_every: int
    threads: int | None
    timeout: float

    @property
    def system(self) -> str:
        """The name this run goes by in comparisons, e.g. ``ddp-powersgd-r1``."""
        if self.mode == "powersgd":
            return f"ddp-powersgd-r{self.powersgd_rank}"
        return f"ddp-{self.mode}"


@dataclass(frozen=True)
class World:
    """Where this process stands in the job."""

    rank: int
    size: int
    addr: str
    port: str


def _env_int(names: tuple[str, ...], *, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise click.ClickException(f"{name}={value!r} is not an integer") from None
    return default


def discover_world() -> World:
    """Rank and size from torch's variables, else the MPI launcher's, else one rank."""
    rank = _env_int(RANK_VARS, default=0)
    size = _env_int(SIZE_VARS, default=1)
    if size < 1 or not 0 <= rank < size:
        raise click.ClickException(f"bad launch environment: rank {rank} of world size {size}")
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = os.environ.get("MASTER_PORT", "29500")
    return World(rank=rank, size=size, addr=addr, port=port)


def join_process_group(world: World, *, timeout: float) -> None:
    """Initialise the gloo process group through torch's ``env://`` rendezvous."""
    os.environ.update(
        {
            "RANK": str(world.rank),
            "WORLD_SIZE": str(world.size),
            "MASTER_ADDR": world.addr,
            "MASTER_PORT": world.port,
        }
    )
    try:
        dist.init_process_group(
            "gloo", init_method="env://", timeout=datetime.timedelta(seconds=timeout)
        )
    except (RuntimeError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise click.ClickException(
            f"rank {world.rank}/{world.size} cannot join the gloo process group at "
            f"{world.addr}:{world.port}: {reason}"
        ) from None


def model_options(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--model-option KEY=VALUE`` pairs as the trainer takes them (``hidden=2048,512``)."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.ClickException(f"--model-option {pair!r}: expected KEY=VALUE")
        parsed[key.strip()] = value.strip()
    return parsed


def load_problem(options: Options) -> tuple[ArrayDataset, nn.Module]:
    """The dataset and the seeded model, as the trainer builds them."""
    try:
        dataset = load_dataset(options.dataset, path=options.data_path)
        inputs = ModelInputs(dataset.input_shape, dataset.num_classes, dataset.task)
        torch.manual_seed(options.seed)
        model = build_model(options.model, inputs, model_options(options.model_option))
    except (ValueError, OSError) as error:  # DatasetError is a ValueError
        raise click.ClickException(str(error)) from None
    return dataset, model


def wrap_ddp(model: nn.Module, options: Options) -> DistributedDataParallel:
    """DDP (broadcasts rank 0's parameters) with the communication hook of ``--mode``.

    PowerSGD gets one 25 MB bucket from the first on (an explicit ``bucket_cap_mb``;
    by default DDP caps the first bucket at 1 MB): with two or more buckets over
    gloo, the hook's chained allreduces of different buckets were issued in
    different orders on different ranks and gloo aborted ("Received data size
    doesn't match expected size"; torch 2.13, a 2.1 M-parameter MLP).
    """
    buckets = {"bucket_cap_mb": POWERSGD_BUCKET_MB} if options.mode == "powersgd" else {}
    ddp = DistributedDataParallel(model, **buckets)
    if options.mode == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif options.mode == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=options.powersgd_rank,
            start_powerSGD_iter=options.powersgd_start_iter,
            random_seed=options.seed,
        )
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    return ddp


def make_optimizer(ddp: nn.Module, options: Options) -> torch.optim.Optimizer:
    """The trainer's own optimizer factory, applied to the averaged gradients, with
    the settings as given (momentum compensation is the trainer's remedy, not DDP's)."""
    settings = OptimizerSettings(options.lr, options.momentum, options.weight_decay)
    return OPTIMIZERS[options.optimizer](ddp.parameters(), settings)


@dataclass
class Run:
    """One training run's live objects, position and clocks."""

    options: Options
    world: World
    dataset: ArrayDataset
    ddp: DistributedDataParallel
    optimizer: torch.optim.Optimizer
    metrics: TextIO | None
    schedule: Schedule = field(default_factory=Schedule)
    started: float = field(default_factory=time.perf_counter)
    eval_seconds: float = 0.0
    step: int = 0
    epoch: int = 0
    loss_sum: float = 0.0  # this rank's training loss since the last evaluation
    loss_count: int = 0
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.options.max_steps is not None and self.step >= self.options.max_steps

    def train_seconds(self) -> float:
        return time.perf_counter() - self.started - self.eval_seconds

    def train_step(self, rows: np.ndarray) -> None:
        """Forward, backward (DDP averages the gradients), optimizer step."""
        inputs = torch.from_numpy(self.dataset.x_train[rows])
        targets = torch.from_numpy(self.dataset.y_train[rows])
        self.optimizer.zero_grad(set_to_none=True)
        score = TASKS[self.dataset.task](self.ddp(inputs), targets)
        score.loss.backward()
        for group in self.optimizer.param_groups:  # as the trainer: the rate of this step
            group["lr"] = self.options.lr * self.schedule.factor(self.step)
        self.optimizer.step()
        self.step += 1
        self.loss_sum += float(score.loss.detach()) * score.count
        self.loss_count += score.count

    def run_epoch(self, epoch: int) -> bool:
        """Train ``epoch`` in the trainer's order; False once ``--max-steps`` is reached."""
        self.epoch = epoch
        shard = epoch_shard(
            len(self.dataset.x_train),
            rank=self.world.rank,
            size=self.world.size,
            seed=self.options.seed,
            epoch=epoch,
        )
        for rows in batches(shard, self.options.batch_size):
            if self.done:
                return False
            self.train_step(rows)
            if self.options.eval_every and self.step % self.options.eval_every == 0:
                self.record_eval()
        return not self.done

    def train(self) -> float:
        """All epochs (or ``--max-steps``), evaluating as asked and once at the end."""
        for epoch in range(self.options.epochs):
            if not self.run_epoch(epoch):
                break
            if self.options.eval_every == 0:
                self.record_eval()
        train_seconds = self.train_seconds()
        if not self.evals or self.evals[-1]["step"] != self.step:
            self.record_eval()
        return train_seconds

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float]:
        """Collective: (test loss, test accuracy, train loss since the last call)."""
        model, ds = self.ddp.module, self.dataset
        model.eval()
        totals = torch.zeros(5, dtype=torch.float64)
        rows = eval_shard(len(ds.x_test), rank=self.world.rank, size=self.world.size)
        for batch in batches(rows, EVAL_BATCH):
            inputs, targets = torch.from_numpy(ds.x_test[batch]), torch.from_numpy(ds.y_test[batch])
            score = TASKS[ds.task](model(inputs), targets)
            totals += torch.tensor(
                [float(score.loss) * score.count, score.correct, score.count, 0.0, 0.0],
                dtype=torch.float64,
            )
        totals[3:] += torch.tensor([self.loss_sum, self.loss_count], dtype=torch.float64)
        dist.all_reduce(totals)
        model.train()
        self.loss_sum, self.loss_count = 0.0, 0
        loss, correct, count, train_loss, train_count = totals.tolist()
        mean_train = train_loss / train_count if train_count else math.nan
        return loss / max(count, 1.0), correct / max(count, 1.0), mean_train

    def record_eval(self) -> None:
        """Evaluate (off the training clock) and log one ``eval`` record."""
        before = time.perf_counter()
        train_seconds = before - self.started - self.eval_seconds
        test_loss, test_accuracy, train_loss = self.evaluate()
        self.eval_seconds += time.perf_counter() - before
        record: dict[str, Any] = {
            "type": "eval",
            "step": self.step,
            "epoch": self.epoch,
            "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - self.started,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
        }
        if self.dataset.task == "language_model":
            record["test_perplexity"] = perplexity(test_loss)
        self.evals.append(record)
        if self.metrics is not None:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # as the trainer: no overflow


def build_summary(run: Run, *, train_seconds: float) -> dict[str, Any]:
    """summary.json: the run's configuration, times and final test scores (not the wall)."""
    options, last = run.options, run.evals[-1]
    summary: dict[str, Any] = {
        "system": options.system,
        "mode": options.mode,
        "backend": "gloo",
        "torch_version": torch.__version__,
        "world_size": run.world.size,
        "model": options.model,
        "model_options": model_options(options.model_option),
        "dataset": options.dataset,
        "parameters": sum(p.numel() for p in run.ddp.module.parameters()),
        "steps": run.step,
        "epochs": options.epochs,
        "max_steps": options.max_steps,
        "batch_size": options.batch_size,
        "lr": options.lr,
        "optimizer": options.optimizer,
        "momentum": options.momentum,
        "weight_decay": options.weight_decay,
        "lr_schedule": options.lr_schedule,
        "seed": options.seed,
        "threads": torch.get_num_threads(),
        "powersgd_rank": options.powersgd_rank if options.mode == "powersgd" else None,
        "powersgd_start_iter": (
            options.powersgd_start_iter if options.mode == "powersgd" else None
        ),
        "train_seconds": train_seconds,
        "eval_seconds": run.eval_seconds,
        "seconds_per_step": train_seconds / run.step if run.step else math.nan,
        "train_loss": last["train_loss"],
        "test_loss": last["test_loss"],
        "test_accuracy": last["test_accuracy"],
        "evals": run.evals,
    }
    if run.dataset.task == "language_model":
        summary["test_perplexity"] = last["test_perplexity"]
    return summary


def schedule_for(options: Options, samples: int, size: int) -> Schedule:
    """The trainer's learning-rate schedule over the same number of steps."""
    total = math.ceil((samples // size) / options.batch_size) * options.epochs
    if options.max_steps is not None:
        total = min(total, options.max_steps)
    return Schedule(name=options.lr_schedule, total_steps=total)


def gather(value: Any, size: int) -> list[Any]:
    """Collective: every rank's ``value``, in rank order."""
    values: list[Any] = [None] * size
    dist.all_gather_object(values, value)
    return values


def train_and_report(
    options: Options, world: World, dataset: ArrayDataset, model: nn.Module
) -> dict[str, Any]:
    """Wrap, train, evaluate, gather; the summary without ``wall_seconds``. Collective."""
    ddp = wrap_ddp(model, options)
    metrics = (options.output_dir / "metrics.jsonl").open("w") if world.rank == 0 else None
    run = Run(options, world, dataset, ddp, make_optimizer(ddp, options), metrics)
    run.schedule = schedule_for(options, len(dataset.x_train), world.size)
    try:
        train_seconds = run.train()
    finally:
        if metrics is not None:
            metrics.close()
    summary = build_summary(run, train_seconds=train_seconds)
    hostnames = gather(socket.gethostname(), world.size)
    digests = gather(parameter_digest(model), world.size)
    summary.update(hostnames=hostnames, params_identical=len(set(digests)) == 1)
    return summary


def benchmark(options: Options, *, started: float) -> tuple[dict[str, Any], int]:
    """Load, join, train, evaluate; returns (summary, rank). Collective."""
    world = discover_world()
    if world.rank == 0 and (reason := check_writable_dir(options.output_dir)):
        raise click.ClickException(reason)
    dataset, model = load_problem(options)
    join_process_group(world, timeout=options.timeout)
    try:
        summary = train_and_report(options, world, dataset, model)
    finally:
        dist.destroy_process_group()
    summary["wall_seconds"] = time.perf_counter() - started
    return summary, world.rank


def final_line(summary: dict[str, Any]) -> str:
    """E.g. ``ddp-powersgd-r1: 2 ranks, 705 steps, test acc 0.8612, 25.6 s (wall 28.0 s)``."""
    ranks = summary["world_size"]
    return (
        f"{summary['system']}: {ranks} rank{'s' * (ranks != 1)}, {summary['steps']} steps, "
        f"test acc {summary['test_accuracy']:.4f}, {summary['train_seconds']:.1f} s "
        f"(wall {summary['wall_seconds']:.1f} s)"
    )


@click.command(context_settings={"show_default": True})
@click.option("--dataset", default=DEFAULTS.dataset, help="Dataset name, as adacomp-train.")
@click.option(
    "--data-path",
    type=click.Path(path_type=Path),
    default=None,
    help="File or directory to read the dataset from (default: its standard place).",
)
@click.option("--model", default=DEFAULTS.model, help="Model from the zoo, as adacomp-train.")
@click.option(
    "--model-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="A size of the zoo model, as adacomp-train (hidden=2048,512); repeatable.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many steps in all [default: run every epoch].",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULTS.batch_size, help="Per rank."
)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.lr)
@click.option("--optimizer", type=click.Choice(sorted(OPTIMIZERS)), default=DEFAULTS.optimizer)
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS.momentum)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=DEFAULTS.weight_decay)
@click.option(
    "--lr-schedule",
    type=click.Choice(sorted(SCHEDULES)),
    default=DEFAULTS.lr_schedule,
    help="As adacomp-train: the learning rate over the run's steps.",
)
@click.option("--seed", type=int, default=DEFAULTS.seed)
@click.option("--mode", type=click.Choice(MODES), default="fp32", help="Gradient communication.")
@click.option("--powersgd-rank", type=click.IntRange(min=1), default=1, help="PowerSGD rank.")
@click.option(
    "--powersgd-start-iter",
    type=click.IntRange(min=2),
    default=10,
    help="Steps of plain allreduce before PowerSGD starts (PyTorch needs > 1).",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/ddp_peer"),
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=0),
    default=0,
    help="Evaluate on the test split every N steps; 0: once per epoch.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Torch threads per rank [1]."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    help="Seconds to wait for peers at start-up and in each collective.",
)
def main(**values: Any) -> None:
    """Train with torch DDP (gloo, CPU) the way adacomp-train does, for comparison."""
    started = time.perf_counter()
    options = Options(**values)
    torch.set_num_threads(options.threads or 1)
    summary, rank = benchmark(options, started=started)
    if rank == 0:
        atomic_write_json(options.output_dir / "summary.json", summary)
        click.echo(final_line(summary))


def run_and_exit() -> None:
    """Run the command, then end the process without Python's shutdown.

    Once DDP has been built, gloo's worker threads outlive ``destroy_process_group`` (the
    process group is still referenced from C++), and a worker that frees the tensors of
    the last collective while the interpreter finalises aborts the whole process
    ("terminate called without an active exception", seen in about 1 run in 5 on a
    loaded 2-core machine with torch 2.13). Every output is written and closed by then.
    """
    code = 0
    try:
        main()
    except SystemExit as stop:  # click always ends with sys.exit
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run_and_exit()
