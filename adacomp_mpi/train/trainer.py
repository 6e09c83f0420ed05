"""One run's live objects and the two things done with them: a training step
(model -> gradients -> exchange -> optimizer) and an evaluation.

Every rank runs the same code on its own data shard; the exchange makes the
averaged gradient bit-identical everywhere, so the replicas stay bit-identical
without ever broadcasting parameters after the start.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from adacomp_mpi.codec.state import CodecState
from adacomp_mpi.datasets import ArrayDataset
from adacomp_mpi.dist.agree import sum_across
from adacomp_mpi.dist.communicator import Communicator
from adacomp_mpi.dist.exchange import Exchange, StepTraffic
from adacomp_mpi.dist.watchdog import Heartbeat, NoHeartbeat

from .config import TrainConfig
from .gradients import GradientBridge
from .ledger import Ledger
from .metrics import LocalStep
from .sharding import batches, eval_shard
from .tasks import TASKS

EVAL_BATCH = 512


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
    ledger: Ledger
    heartbeat: Heartbeat = field(default_factory=NoHeartbeat)

    @property
    def step(self) -> int:
        return self.ledger.step

    def _tensors(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (
            torch.from_numpy(x[rows]).to(self.device),
            torch.from_numpy(y[rows]).to(self.device),
        )

    def train_step(self, rows: np.ndarray) -> tuple[LocalStep, StepTraffic]:
        """Forward, backward, exchange, optimizer step (skipped if any rank voided)."""
        started = time.perf_counter()
        self.heartbeat.beat("forward_backward", self.step)
        inputs, targets = self._tensors(self.dataset.x_train, self.dataset.y_train, rows)
        self.model.train()
        self.bridge.zero()
        score = TASKS[self.dataset.task](self.model(inputs), targets)
        score.loss.backward()
        grads = self.bridge.to_host()
        loss = float(score.loss.detach())
        finite = math.isfinite(loss) and grads.is_finite()
        backward_done = time.perf_counter()
        self.heartbeat.beat(self.exchange.collective, self.step)
        traffic = self.exchange.average(
            grads, dense=self.step < self.config.warmup_steps, finite=finite
        )
        exchanged = time.perf_counter()
        self.heartbeat.beat("optimizer", self.step)
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
            counts=traffic.counts,
        )
        return local, traffic

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Collective: (mean test loss, test accuracy) over the whole test split."""
        self.model.eval()
        rows = eval_shard(len(self.dataset.x_test), rank=self.comm.rank, size=self.comm.size)
        loss_sum = correct = count = 0.0
        for batch in batches(rows, EVAL_BATCH):
            self.heartbeat.beat("evaluation", self.step)
            inputs, targets = self._tensors(self.dataset.x_test, self.dataset.y_test, batch)
            score = TASKS[self.dataset.task](self.model(inputs), targets)
            loss_sum += float(score.loss) * score.count
            correct += score.correct
            count += score.count
        self.heartbeat.beat("evaluation allreduce", self.step)
        loss_sum, correct, count = sum_across(self.comm, [loss_sum, correct, count])
        return loss_sum / max(count, 1), correct / max(count, 1)
