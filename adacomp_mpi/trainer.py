"""The training loop: model -> gradients -> exchange (codec + MPI) -> optimizer.

Owns torch. Every rank runs the same code on its own data shard; the exchange
makes the averaged gradient bit-identical everywhere, so the replicas stay
bit-identical without ever broadcasting parameters after the start.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from .communicator import Communicator, hostname
from .config import TrainConfig
from .datasets import ArrayDataset, DatasetError, load_dataset
from .errors import UsageError
from .exchange import Exchange, make_exchange
from .files import atomic_write_json, check_writable_dir
from .gradients import GradientBridge, parameter_digest
from .layers import gradient_specs
from .log import get_logger
from .models import ModelInputs, build_model
from .optim import OPTIMIZERS
from .sharding import batches, epoch_shard, eval_shard
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
    """Gather hostnames, derive the local rank, pick one GPU per local rank."""
    hostnames = comm.allgather_object(hostname())
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
    step: int = 0

    def _tensors(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (
            torch.from_numpy(x[rows]).to(self.device),
            torch.from_numpy(y[rows]).to(self.device),
        )

    def train_step(self, rows: np.ndarray) -> tuple[float, int]:
        """Forward, backward, exchange, optimizer step; returns (loss sum, count)."""
        inputs, targets = self._tensors(self.dataset.x_train, self.dataset.y_train, rows)
        self.model.train()
        self.bridge.zero()
        score = TASKS[self.dataset.task](self.model(inputs), targets)
        score.loss.backward()
        grads = self.bridge.to_host()
        self.exchange.average(grads, dense=self.step < self.config.warmup_steps)
        self.bridge.from_host()
        self.optimizer.step()
        self.step += 1
        return float(score.loss.detach()) * score.count, score.count

    def train_epoch(self, epoch: int) -> float:
        """One pass over this rank's shard; returns the mean training loss (all ranks)."""
        shard = epoch_shard(
            len(self.dataset.x_train),
            rank=self.comm.rank,
            size=self.comm.size,
            seed=self.config.seed,
            epoch=epoch,
        )
        loss_sum = count = 0.0
        for rows in batches(shard, self.config.batch_size):
            batch_loss, batch_count = self.train_step(rows)
            loss_sum, count = loss_sum + batch_loss, count + batch_count
        total_loss, total_count = _sum_across(self.comm, [loss_sum, count])
        return total_loss / max(total_count, 1)

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


def train(config: TrainConfig, comm: Communicator) -> dict:
    """Run a whole training job; rank 0 writes and every rank returns the summary."""
    log = get_logger()
    started = time.perf_counter()
    agree(comm, lambda: _check_outputs(config, comm.rank))
    launch = describe_launch(comm)
    _log_launch(comm, launch)
    trainer = build_trainer(config, comm, launch)
    log.info(
        "model %s on %s: %d train / %d test samples, %d parameters, compression %s",
        config.model,
        config.dataset,
        len(trainer.dataset.x_train),
        len(trainer.dataset.x_test),
        sum(s.numel for s in trainer.codec_state.specs),
        config.compression,
    )
    test_loss, test_accuracy, train_loss = math.nan, math.nan, math.nan
    for epoch in range(config.epochs):
        train_loss = trainer.train_epoch(epoch)
        test_loss, test_accuracy = trainer.evaluate()
        log.info(
            "epoch %d/%d  train loss %.4f  test loss %.4f  test acc %.4f",
            epoch + 1,
            config.epochs,
            train_loss,
            test_loss,
            test_accuracy,
        )
    summary = build_summary(
        trainer,
        launch=launch,
        train_loss=train_loss,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        wall_seconds=time.perf_counter() - started,
        digests=comm.allgather_object(parameter_digest(trainer.model)),
    )
    if comm.rank == 0:
        atomic_write_json(config.summary_path, summary)
    return summary


def _check_outputs(config: TrainConfig, rank: int) -> None:
    """Rank 0 writes every output file: fail early if it could not."""
    if rank != 0:
        return
    for directory in {config.output_dir, config.summary_path.parent}:
        if reason := check_writable_dir(directory):
            raise UsageError(reason)
