"""The training loop: model -> gradients -> exchange (codec + MPI) -> optimizer.

Owns torch. Every rank runs the same code on its own data shard; the exchange
makes the averaged gradient bit-identical everywhere, so the replicas stay
bit-identical without ever broadcasting parameters after the start.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .communicator import Communicator, hostname
from .config import TRAJECTORY_OPTIONS, TrainConfig
from .datasets import ArrayDataset, DatasetError, load_dataset
from .errors import StopTraining, UsageError
from .exchange import Exchange, StepTraffic, make_exchange
from .files import atomic_write_json, check_writable_dir
from .gradients import GradientBridge, parameter_digest
from .layers import gradient_specs
from .log import get_logger
from .metrics import (
    FLOAT32_BYTES,
    LocalStep,
    MetricsWriter,
    delta,
    reduce_step,
    snapshot,
    step_record,
)
from .models import ModelInputs, build_model
from .optim import OPTIMIZERS
from .progress import Progress, make_progress
from .runinfo import run_config
from .sharding import batches, epoch_shard, eval_shard
from .signals import EXIT_NONFINITE, EXIT_PREEMPTED, StopRequest
from .specs import CompressionPolicy
from .state import CodecConfig, CodecState, make_state
from .summary import build_summary
from .tasks import TASKS

T = TypeVar("T")


def agree(comm: Communicator, action: Callable[[], T]) -> T:
    """Run ``action`` on every rank; if it fails on any, raise UsageError on all.

    Nothing collective happens inside ``action``, so a rank that fails cannot
    leave the others waiting: they all meet in the allgather below.
    """
    try:
        result, error = action(), None
    except (UsageError, DatasetError, ValueError, OSError) as failure:
        result, error = None, str(failure).splitlines()[0] if str(failure) else repr(failure)
    errors = comm.allgather_object(error)
    failed = [(rank, message) for rank, message in enumerate(errors) if message]
    if failed:
        messages = {message for _, message in failed}
        if len(messages) == 1 and len(failed) == comm.size:
            raise UsageError(messages.pop())
        raise UsageError("; ".join(f"rank {rank}: {message}" for rank, message in failed))
    return result


@dataclass
class Launch:
    """Where this rank runs: hostnames of all ranks, local rank, device."""

    hostnames: list[str]
    local_rank: int
    device: torch.device


def describe_launch(comm: Communicator) -> Launch:
    """Gather hostnames and PIDs, derive the local rank, pick one GPU per local rank."""
    places = comm.allgather_object((hostname(), os.getpid()))
    hostnames = [host for host, _ in places]
    get_logger().info(
        "ranks: %s", ", ".join(f"{r}=pid {pid}@{host}" for r, (host, pid) in enumerate(places))
    )
    local_rank = hostnames[: comm.rank].count(hostnames[comm.rank])
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    return Launch(hostnames, local_rank, device)


def _log_launch(comm: Communicator, launch: Launch) -> None:
    log = get_logger()
    per_host = Counter(launch.hostnames)
    hosts = ", ".join(f"{host} x{count}" for host, count in per_host.items())
    log.info("world size %d on %d host(s): %s", comm.size, len(per_host), hosts)
    if launch.device.type == "cpu":
        log.info("device: cpu (CUDA not available)")
    else:
        log.info("device: %s (one GPU per local rank)", launch.device)


def _broadcast_module(module: nn.Module, comm: Communicator) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    for tensor in [*module.parameters(), *module.buffers()]:
        host = tensor.detach().cpu().contiguous().numpy()
        comm.broadcast(host, root=0)
        tensor.data.copy_(torch.from_numpy(host))


def _sum_across(comm: Communicator, values: list[float]) -> np.ndarray:
    array = np.asarray(values, np.float64)
    comm.allreduce_sum(array)
    return array


@dataclass
class Position:
    """Where training stands: global steps done, current epoch, batches done in it."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass
class Totals:
    """Whole-run aggregates (all ranks) that the summary reports."""

    bytes_sent: float = 0.0
    dense_bytes: float = 0.0
    skipped_steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)  # codec counters


@dataclass
class Trainer:
    """One run's live objects."""

    config: TrainConfig
    comm: Communicator
    dataset: ArrayDataset
    model: nn.Module
    optimizer: torch.optim.Optimizer
    codec_state: CodecState
    exchange: Exchange
    bridge: GradientBridge
    device: torch.device
    position: Position = field(default_factory=Position)
    totals: Totals = field(default_factory=Totals)

    @property
    def step(self) -> int:
        return self.position.step

    @property
    def numel(self) -> int:
        return sum(spec.numel for spec in self.codec_state.specs)

    def _tensors(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (
            torch.from_numpy(x[rows]).to(self.device),
            torch.from_numpy(y[rows]).to(self.device),
        )

    def train_step(self, rows: np.ndarray) -> tuple[LocalStep, StepTraffic]:
        """Forward, backward, exchange, optimizer step (skipped if any rank voided)."""
        started = time.perf_counter()
        inputs, targets = self._tensors(self.dataset.x_train, self.dataset.y_train, rows)
        self.model.train()
        self.bridge.zero()
        score = TASKS[self.dataset.task](self.model(inputs), targets)
        score.loss.backward()
        grads = self.bridge.to_host()
        loss = float(score.loss.detach())
        finite = math.isfinite(loss) and all(bool(np.isfinite(g).all()) for g in grads)
        backward_done = time.perf_counter()
        before = snapshot(self.codec_state)
        traffic = self.exchange.average(
            grads, dense=self.step < self.config.warmup_steps, finite=finite
        )
        exchanged = time.perf_counter()
        if traffic.applied:
            self.bridge.from_host()
            self.optimizer.step()
        seconds = {
            "forward_backward": backward_done - started,
            **traffic.seconds,
            "optimizer": time.perf_counter() - exchanged,
        }
        local = LocalStep(
            loss_sum=loss * score.count if finite else 0.0,
            count=score.count,
            seconds=seconds,
            kind_delta=delta(before, self.codec_state),
        )
        return local, traffic

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(mean test loss, test accuracy) over the whole test split."""
        self.model.eval()
        rows = eval_shard(len(self.dataset.x_test), rank=self.comm.rank, size=self.comm.size)
        loss_sum = correct = count = 0.0
        for batch in batches(rows, 512):
            inputs, targets = self._tensors(self.dataset.x_test, self.dataset.y_test, batch)
            score = TASKS[self.dataset.task](self.model(inputs), targets)
            loss_sum += float(score.loss) * score.count
            correct += score.correct
            count += score.count
        loss_sum, correct, count = _sum_across(self.comm, [loss_sum, correct, count])
        return loss_sum / max(count, 1), correct / max(count, 1)

    # -- checkpoints ---------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Collective: write model, optimizer, position and every rank's residues."""
        codec = self.codec_state.state_dict()
        codec["residues"] = {k: torch.from_numpy(v) for k, v in codec["residues"].items()}
        path = checkpoint.save(
            self.config.checkpoint_dir,
            comm=self.comm,
            step=self.step,
            common={
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "position": vars(self.position).copy(),
                "totals": asdict(self.totals),
                "config": self.config.to_dict(),
            },
            rank_state={
                "codec": codec,
                "bytes_sent": self.exchange.bytes_sent,
                "torch_rng": torch.get_rng_state(),
            },
            keep=self.config.keep_checkpoints,
        )
        get_logger().info("checkpoint written: %s", path)

    def restore(self, common: dict[str, Any], rank_state: dict[str, Any]) -> None:
        """Load a checkpoint's state; refuse one whose trajectory options differ
        or whose content does not fit this model (CheckpointError, exit 2)."""
        try:
            self._check_trajectory(common["config"])
            self.model.load_state_dict(common["model"])
            self.optimizer.load_state_dict(common["optimizer"])
            self.position = Position(**common["position"])
            self.totals = Totals(**common["totals"])
            codec = dict(rank_state["codec"])
            codec["residues"] = {k: v.numpy() for k, v in codec["residues"].items()}
            self.codec_state.load_state_dict(codec)
            self.exchange.bytes_sent = int(rank_state["bytes_sent"])
            torch.set_rng_state(rank_state["torch_rng"])
        except checkpoint.CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise checkpoint.CheckpointError(
                f"checkpoint does not fit this run: {message}"
            ) from None

    def _check_trajectory(self, saved: dict[str, Any]) -> None:
        current = self.config.to_dict()
        changed = [k for k in TRAJECTORY_OPTIONS if saved.get(k) != current[k]]
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise checkpoint.CheckpointError(f"resume would change the training run ({details})")


def _check_config(config: TrainConfig) -> None:
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(
            f"unknown optimizer {config.optimizer!r}; choose from {sorted(OPTIMIZERS)}"
        )


def build_trainer(config: TrainConfig, comm: Communicator, launch: Launch) -> Trainer:
    """Load data, build and synchronise the model, wire the exchange."""
    _check_config(config)
    dataset = agree(comm, lambda: load_dataset(config.dataset, path=config.data_path))
    inputs = ModelInputs(dataset.input_shape, dataset.num_classes, dataset.task)
    torch.manual_seed(config.seed)
    model = agree(comm, lambda: build_model(config.model, inputs)).to(launch.device)
    _broadcast_module(model, comm)
    policy = CompressionPolicy(bin_sizes=dict(config.bin_sizes), dense_below=config.dense_below)
    specs, params = gradient_specs(model, policy)
    codec_config = agree(comm, lambda: CodecConfig(config.scale_rule, config.index_coding))
    state = make_state(specs, codec_config)
    return Trainer(
        config=config,
        comm=comm,
        dataset=dataset,
        model=model,
        optimizer=OPTIMIZERS[config.optimizer](params, config),
        codec_state=state,
        exchange=make_exchange(config.compression, comm=comm, state=state),
        bridge=GradientBridge(params),
        device=launch.device,
    )


def _check_outputs(config: TrainConfig, rank: int) -> None:
    """Rank 0 writes every output file: fail early if it could not."""
    if rank != 0:
        return
    for directory in {config.output_dir, config.summary_path.parent}:
        if reason := check_writable_dir(directory):
            raise UsageError(reason)


def _resume_path(config: TrainConfig, rank: int) -> str | None:
    """Rank 0 picks the checkpoint to resume from (None: start fresh)."""
    if rank != 0 or config.resume is None:
        return None
    if config.resume == "auto":
        found = checkpoint.latest(config.checkpoint_dir)
        return str(found) if found else None
    return config.resume


def maybe_resume(trainer: Trainer) -> None:
    """Collective: restore from ``--resume`` if given (auto: the newest, if any)."""
    comm, config = trainer.comm, trainer.config
    path = comm.broadcast_object(_resume_path(config, comm.rank))
    if path is None:
        if config.resume == "auto":
            get_logger().info("no checkpoint under %s: starting fresh", config.checkpoint_dir)
        return
    common, rank_state = checkpoint.load(Path(path), comm=comm)
    agree(comm, lambda: trainer.restore(common, rank_state))
    position = trainer.position
    get_logger().info(
        "resumed from %s at step %d (epoch %d, batch %d)",
        path,
        position.step,
        position.epoch + 1,
        position.batch,
    )


@dataclass
class Loop:
    """Runs epochs and steps; writes metrics; acts on stop requests."""

    trainer: Trainer
    metrics: MetricsWriter
    progress: Progress
    stop: StopRequest
    started: float = field(default_factory=time.perf_counter)

    def _record_step(self, local: LocalStep, traffic: StepTraffic, step_seconds: float) -> bool:
        """Reduce across ranks, write metrics; returns whether a stop was requested."""
        trainer = self.trainer
        local.stop_requested = self.stop.requested
        kinds = sorted({spec.kind for spec in trainer.codec_state.specs})
        summed = reduce_step(trainer.comm, local, kinds)
        dense_bytes = FLOAT32_BYTES * trainer.numel * trainer.comm.size
        totals = trainer.totals
        totals.bytes_sent += sum(traffic.sizes)
        totals.dense_bytes += dense_bytes
        for phase, seconds in summed.seconds.items():
            totals.seconds[phase] = totals.seconds.get(phase, 0.0) + seconds
        for kind, counters in summed.by_kind.items():
            running = totals.by_kind.setdefault(kind, dict.fromkeys(counters, 0.0))
            for name, value in counters.items():
                running[name] += value
        record = step_record(
            step=trainer.step,
            epoch=trainer.position.epoch,
            lr=trainer.optimizer.param_groups[0]["lr"],
            summed=summed,
            sizes=traffic.sizes,
            dense_bytes=dense_bytes,
            cumulative_sent=totals.bytes_sent,
            cumulative_dense=totals.dense_bytes,
            step_seconds=step_seconds,
            wall_seconds=time.perf_counter() - self.started,
            dense_mode=trainer.config.compression == "none",
        )
        self.metrics.write(record)
        self.progress.update(
            loss=summed.loss,
            samples_per_s=record["samples_per_s"] or 0.0,
            ratio=record["cumulative_compression_ratio"],
        )
        return summed.stop_requested

    def _handle_void(self, traffic: StepTraffic) -> None:
        trainer = self.trainer
        trainer.totals.skipped_steps += 1
        where = f"rank(s) {list(traffic.voided_ranks)}" if traffic.voided_ranks else "the mean"
        message = f"step {trainer.step}: non-finite gradient or loss on {where}"
        if trainer.config.on_nonfinite == "stop":
            trainer.save_checkpoint()
            raise StopTraining(
                f"{message}; stopped, last good state checkpointed", exit_code=EXIT_NONFINITE
            )
        get_logger().warning("%s; step skipped, parameters unchanged", message)

    def _checkpoint_due(self, unit: str) -> bool:
        config = self.trainer.config
        if config.checkpoint_every <= 0 or config.checkpoint_unit != unit:
            return False
        count = self.trainer.step if unit == "steps" else self.trainer.position.epoch
        return count % config.checkpoint_every == 0

    def run_epoch(self, epoch: int) -> float:
        """Train the rest of ``epoch``; returns its mean training loss (this session)."""
        trainer, config = self.trainer, self.trainer.config
        shard = epoch_shard(
            len(trainer.dataset.x_train),
            rank=trainer.comm.rank,
            size=trainer.comm.size,
            seed=config.seed,
            epoch=epoch,
        )
        plan = batches(shard, config.batch_size)
        self.progress.start_epoch(epoch, total=len(plan), done=trainer.position.batch)
        loss_sum = count = 0.0
        for index in range(trainer.position.batch, len(plan)):
            step_started = time.perf_counter()
            local, traffic = trainer.train_step(plan[index])
            trainer.position = Position(trainer.step + 1, epoch, index + 1)
            stop = self._record_step(local, traffic, time.perf_counter() - step_started)
            loss_sum, count = loss_sum + local.loss_sum, count + local.count
            if not traffic.applied:
                self._handle_void(traffic)
            if stop:
                trainer.save_checkpoint()
                raise StopTraining(
                    f"preempted ({self.stop.signal_name or 'signal on another rank'}) at step "
                    f"{trainer.step}; checkpoint written, rerun with --resume auto",
                    exit_code=EXIT_PREEMPTED,
                )
            if self._checkpoint_due("steps"):
                trainer.save_checkpoint()
        self.progress.end_epoch()
        trainer.position = Position(trainer.step, epoch + 1, 0)
        total_loss, total_count = _sum_across(trainer.comm, [loss_sum, count])
        return total_loss / total_count if total_count else math.nan

    def run(self) -> dict[str, float]:
        trainer, config = self.trainer, self.trainer.config
        log = get_logger()
        result = {"train_loss": math.nan, "test_loss": math.nan, "test_accuracy": math.nan}
        for epoch in range(trainer.position.epoch, config.epochs):
            train_loss = self.run_epoch(epoch)
            test_loss, test_accuracy = trainer.evaluate()
            result = {
                "train_loss": train_loss,
                "test_loss": test_loss,
                "test_accuracy": test_accuracy,
            }
            record = {"type": "epoch", "epoch": epoch, "step": trainer.step, **result}
            if trainer.dataset.task == "language_model":
                record["test_perplexity"] = math.exp(min(test_loss, 700.0))
            record["wall_seconds"] = time.perf_counter() - self.started
            self.metrics.write(record)
            log.info(
                "epoch %d/%d  train loss %.4f  test loss %.4f  test acc %.4f",
                epoch + 1,
                config.epochs,
                train_loss,
                test_loss,
                test_accuracy,
            )
            if self._checkpoint_due("epochs"):
                trainer.save_checkpoint()
        if math.isnan(result["test_loss"]):  # resumed after the last epoch
            result["test_loss"], result["test_accuracy"] = trainer.evaluate()
        return result


def train(config: TrainConfig, comm: Communicator, *, stop: StopRequest | None = None) -> dict:
    """Run a whole training job; rank 0 writes and every rank returns the summary."""
    log = get_logger()
    started = time.perf_counter()
    agree(comm, lambda: _check_outputs(config, comm.rank))
    launch = describe_launch(comm)
    _log_launch(comm, launch)
    trainer = build_trainer(config, comm, launch)
    maybe_resume(trainer)
    if comm.rank == 0:
        atomic_write_json(
            config.output_dir / "config.json", run_config(config, world_size=comm.size)
        )
    log.info(
        "model %s on %s: %d train / %d test samples, %d parameters, compression %s",
        config.model,
        config.dataset,
        len(trainer.dataset.x_train),
        len(trainer.dataset.x_test),
        trainer.numel,
        config.compression,
    )
    metrics = MetricsWriter(
        config.output_dir / "metrics.jsonl" if comm.rank == 0 else None,
        resume_step=trainer.step if config.resume else None,
    )
    loop = Loop(
        trainer=trainer,
        metrics=metrics,
        progress=make_progress(rank=comm.rank, quiet=config.quiet, epochs=config.epochs),
        stop=stop or StopRequest(),
    )
    try:
        result = loop.run()
    finally:
        metrics.close()
    summary = build_summary(
        trainer,
        launch=launch,
        **result,
        wall_seconds=time.perf_counter() - started,
        digests=comm.allgather_object(parameter_digest(trainer.model)),
    )
    if comm.rank == 0:
        atomic_write_json(config.summary_path, summary)
    return summary
