"""One run's live objects and the two things done with them: a training step
(model -> gradients -> exchange -> optimizer) and an evaluation.

Every rank runs the same code on its own data shard; the exchange makes the
averaged gradient bit-identical everywhere, so the replicas stay bit-identical
without ever broadcasting parameters after the start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from adacomp_mpi.codec.api import Encoded
from adacomp_mpi.codec.state import CodecState
from adacomp_mpi.datasets import ArrayDataset
from adacomp_mpi.dist.agree import sum_across
from adacomp_mpi.dist.buffer import GradientBuffer
from adacomp_mpi.dist.communicator import Communicator
from adacomp_mpi.dist.exchange import Exchange, StepTraffic
from adacomp_mpi.dist.watchdog import Heartbeat, NoHeartbeat

from .config import TrainConfig
from .correction import LocalUpdate
from .gradients import GradientBridge
from .ledger import Ledger
from .loss_scale import LossScale
from .metrics import LocalStep
from .overlap import OverlappedEncoder
from .overlap_choice import OverlapTrial
from .schedule import Schedule, bin_divisor
from .sharding import batches, eval_shard
from .tasks import TASKS

# Rows per evaluation batch: small enough that a conv net's activations stay in
# the CPU cache (CNN on Fashion-MNIST, one core: 2.4 s for the test split at
# 128 against 3.2 s at 512; the transformer 1.2 against 1.7 s; an MLP 0.05 s slower).
EVAL_BATCH = 128


@dataclass
class BatchTotals:
    """Loss and sample count summed over a step's micro-batches."""

    loss_sum: float = 0.0
    count: int = 0
    finite: bool = True

    def add(self, mean_loss: float, count: int) -> None:
        self.loss_sum += mean_loss * count
        self.count += count
        self.finite = self.finite and math.isfinite(mean_loss)


# --precision: the dtype autocast runs the forward pass in (fp32: no autocast)
AUTOCAST_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    base_lrs: tuple[float, ...]  # per param group: --lr, or what compensation made of it
    model_sha256: str | None = None  # a user model's source file, to notice a change on resume
    heartbeat: Heartbeat = field(default_factory=NoHeartbeat)
    overlap: OverlappedEncoder | None = None  # encodes during backward when set
    overlap_trial: OverlapTrial | None = None  # --overlap auto, until it has chosen
    overlapping: bool = False  # whether the step in progress encodes during backward
    loss_scale: LossScale | None = None  # --precision fp16
    local: LocalUpdate = field(default_factory=LocalUpdate)  # momentum correction's side
    schedule: Schedule = field(default_factory=Schedule)

    @property
    def step(self) -> int:
        return self.ledger.step

    def _tensors(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (
            torch.from_numpy(x[rows]).to(self.device),
            torch.from_numpy(y[rows]).to(self.device),
        )

    def _backward(self, micro_batches: Sequence[np.ndarray], dense: bool) -> BatchTotals:
        """Forward and backward of every micro-batch, gradients summed in the
        flat buffer; the overlapped encoder starts with the last backward."""
        self.model.train()
        self.bridge.zero()
        totals = BatchTotals()
        rows_total = sum(len(rows) for rows in micro_batches)
        for index, rows in enumerate(micro_batches):
            inputs, targets = self._tensors(self.dataset.x_train, self.dataset.y_train, rows)
            with self.autocast():
                score = TASKS[self.dataset.task](self.model(inputs), targets)
            if self.overlapping and index == len(micro_batches) - 1:
                self.overlap.begin(dense=dense)
            # Weighted so the sum over micro-batches is the mean over all their rows.
            weight = len(rows) / rows_total * (self.loss_scale.value if self.loss_scale else 1.0)
            (score.loss * weight).backward()
            totals.add(float(score.loss.detach()), score.count)
        return totals

    def train_step(
        self, micro_batches: np.ndarray | Sequence[np.ndarray]
    ) -> tuple[LocalStep, StepTraffic]:
        """Forward/backward of each micro-batch (or of one batch of rows), one
        exchange, one optimizer step (skipped if any rank voided)."""
        if isinstance(micro_batches, np.ndarray):
            micro_batches = [micro_batches]
        started = time.perf_counter()
        self.heartbeat.beat("forward_backward", self.step)
        dense = self.step < self.config.dense_warmup_steps
        self.codec_state.bin_divisor = bin_divisor(self.step, self.config.bin_warmup_steps)
        self.overlapping = self.overlap is not None and (
            self.overlap_trial is None or self.overlap_trial.next_mode()
        )
        totals = self._backward(micro_batches, dense)
        backward_done = time.perf_counter()
        if self.loss_scale is not None:  # fp16: the codec and the residues see true gradients
            torch._foreach_mul_([p.grad for p in self.bridge.params], 1 / self.loss_scale.value)
        if not self.overlapping:
            self.local.apply(self.bridge.params)  # weight decay, clipping: before the codec
            grads = self.bridge.to_host()
            finite = totals.finite and grads.is_finite()
            encoded, waited = None, None
        else:
            grads, finite, encoded = self._finish_overlapped(totals.finite)
            waited = time.perf_counter() - backward_done  # the encode time backward did not hide
        self.heartbeat.beat(self.exchange.collective, self.step)
        traffic = self.exchange.average(grads, dense=dense, finite=finite, encoded=encoded)
        if self.loss_scale is not None:
            self.loss_scale.update(applied=traffic.applied)
        exchanged = time.perf_counter()
        self.heartbeat.beat("optimizer", self.step)
        if traffic.applied:
            self._optimizer_step()
        seconds = {
            "forward_backward": backward_done - started,
            **traffic.seconds,
            "optimizer": time.perf_counter() - exchanged,
        }
        if waited is not None:
            seconds["encode"] = waited
        local = LocalStep(
            loss_sum=totals.loss_sum if finite else 0.0,
            count=totals.count,
            seconds=seconds,
            counts=traffic.counts,
        )
        return local, traffic

    def _optimizer_step(self) -> None:
        """The averaged gradient into .grad, clipped if asked, at this step's rate."""
        self.bridge.from_host()
        if self.config.clip_grad_norm > 0 and not self.local.active:  # else clipped locally
            torch.nn.utils.clip_grad_norm_(self.bridge.params, self.config.clip_grad_norm)
        factor = self.schedule.factor(self.step)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * factor
        self.optimizer.step()

    def autocast(self) -> AbstractContextManager:
        """bf16/fp16 autocast of the forward pass when asked, else nothing."""
        if self.config.precision in AUTOCAST_TYPES:
            return torch.autocast(self.device.type, dtype=AUTOCAST_TYPES[self.config.precision])
        return nullcontext()

    def _finish_overlapped(self, loss_finite: bool) -> tuple[GradientBuffer, bool, Encoded | None]:
        """The gradients, whether they are finite, and the payload the worker
        encoded during backward (None for a void step: no residue changed)."""
        if not loss_finite:
            self.overlap.cancel()
            return self.bridge.buffer, False, None
        encoded = self.overlap.finish()
        return self.bridge.buffer, encoded is not None, encoded

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> tuple[float, float]:
        """Collective: (mean loss, accuracy) over the whole ``split`` ("test" or "val")."""
        self.model.eval()
        x, y = getattr(self.dataset, f"x_{split}"), getattr(self.dataset, f"y_{split}")
        rows = eval_shard(len(x), rank=self.comm.rank, size=self.comm.size)
        loss_sum = correct = count = 0.0
        for batch in batches(rows, EVAL_BATCH):
            self.heartbeat.beat("evaluation", self.step)
            inputs, targets = self._tensors(x, y, batch)
            with self.autocast():
                score = TASKS[self.dataset.task](self.model(inputs), targets)
            loss_sum += float(score.loss) * score.count
            correct += score.correct
            count += score.count
        self.heartbeat.beat("evaluation allreduce", self.step)
        loss_sum, correct, count = sum_across(self.comm, [loss_sum, correct, count])
        return loss_sum / max(count, 1), correct / max(count, 1)
