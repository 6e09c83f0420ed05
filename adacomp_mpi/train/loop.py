"""The training loop: epochs of steps, metrics per step, evaluation per epoch,
checkpoints when due, and the stop rules (preemption, non-finite steps)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from adacomp_mpi.common.errors import StopTraining
from adacomp_mpi.common.log import get_logger
from adacomp_mpi.dist.agree import sum_across
from adacomp_mpi.dist.exchange import StepTraffic
from adacomp_mpi.report.schema import perplexity

from .ledger import Position
from .metrics import GlobalStep, LocalStep, MetricsWriter, reduce_step
from .progress import Progress
from .resume import save_checkpoint
from .sharding import batches, epoch_shard
from .signals import EXIT_INTERRUPTED, EXIT_NONFINITE, EXIT_PREEMPTED, StopRequest
from .trainer import Trainer


@dataclass
class Loop:
    """Runs epochs and steps; writes metrics; acts on stop requests."""

    trainer: Trainer
    metrics: MetricsWriter
    progress: Progress
    stop: StopRequest
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.kinds = sorted({spec.kind for spec in self.trainer.codec_state.specs})
        self.finished = False  # --max-steps or --time-limit ended training early
        self.eval_seconds = 0.0  # spent in evaluations: off the time-to-accuracy clock

    def _record_step(
        self, local: LocalStep, traffic: StepTraffic, step_seconds: float
    ) -> GlobalStep:
        """Reduce across ranks (stop requests included), write metrics."""
        trainer = self.trainer
        local.stop_requested, local.interrupted = self.stop.requested, self.stop.interrupted
        trainer.heartbeat.beat("metrics allreduce", trainer.step)
        summed = reduce_step(trainer.comm, local, self.kinds)
        record = trainer.ledger.record_step(
            summed,
            sizes=traffic.sizes,
            received=traffic.received_per_rank,
            lr=trainer.optimizer.param_groups[0]["lr"],
            step_seconds=step_seconds,
            wall_seconds=self.elapsed(),
        )
        self.metrics.write(record)
        self.progress.update(
            loss=summed.loss,
            samples_per_s=record["samples_per_s"] or 0.0,
            ratio=record["cumulative_compression_ratio"],
        )
        return summed

    def _time_overlap(self, summed: GlobalStep) -> None:
        """--overlap auto: feed the trial this step's time, which the per-step
        Allreduce made the same on every rank; log the choice once made."""
        trainer = self.trainer
        choice = trainer.overlap_trial.observe(trainer.overlapping, sum(summed.seconds.values()))
        if choice is not None:
            medians = trainer.overlap_trial.medians()
            get_logger().info(
                "overlap auto: %s (%.2f ms a step encoding during backward, %.2f ms after)",
                "on" if choice else "off",
                1e3 * medians[True],
                1e3 * medians[False],
            )

    def _handle_void(self, traffic: StepTraffic) -> None:
        trainer = self.trainer
        trainer.ledger.totals.skipped_steps += 1
        where = f"rank(s) {list(traffic.voided_ranks)}" if traffic.voided_ranks else "the mean"
        message = f"step {trainer.step}: non-finite gradient or loss on {where}"
        if trainer.config.on_nonfinite == "stop":
            save_checkpoint(trainer)
            raise StopTraining(
                f"{message}; stopped, last good state checkpointed", exit_code=EXIT_NONFINITE
            )
        if trainer.comm.rank == 0 or trainer.config.log_all_ranks:  # the same on every rank
            get_logger().warning("%s; step skipped, parameters unchanged", message)

    def checkpoint_due(self, unit: str) -> bool:
        config, position = self.trainer.config, self.trainer.ledger.position
        if config.checkpoint_every <= 0 or config.checkpoint_unit != unit:
            return False
        count = position.step if unit == "steps" else position.epoch
        return count % config.checkpoint_every == 0

    def _stop(self, summed: GlobalStep) -> None:
        """A signal reached some rank: every rank checkpoints and exits alike."""
        save_checkpoint(self.trainer)
        what = "interrupted" if summed.interrupted else "preempted"
        raise StopTraining(
            f"{what} ({self.stop.signal_name or 'signal on another rank'}) at step "
            f"{self.trainer.step}; checkpoint written, rerun with --resume auto",
            exit_code=EXIT_INTERRUPTED if summed.interrupted else EXIT_PREEMPTED,
        )

    def step_plan(self, epoch: int) -> list[list[np.ndarray]]:
        """This rank's optimizer steps of ``epoch``: groups of --accumulate
        micro-batches (the same count on every rank)."""
        trainer, config = self.trainer, self.trainer.config
        shard = epoch_shard(
            len(trainer.dataset.x_train),
            rank=trainer.comm.rank,
            size=trainer.comm.size,
            seed=config.seed,
            epoch=epoch,
        )
        plan = batches(shard, config.batch_size)
        return [plan[i : i + config.accumulate] for i in range(0, len(plan), config.accumulate)]

    def _finished(self, summed: GlobalStep) -> bool:
        """--max-steps reached, or --time-limit passed on rank 0 (checkpointed)."""
        config, ledger = self.trainer.config, self.trainer.ledger
        if summed.out_of_time:
            get_logger().info(
                "time limit of %.0f s reached at step %d", config.time_limit, ledger.step
            )
            save_checkpoint(self.trainer)
            return True
        return 0 < config.max_steps <= ledger.step

    def _out_of_time(self) -> bool:
        limit = self.trainer.config.time_limit
        return self.trainer.comm.rank == 0 and limit > 0 and self.elapsed() >= limit

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def run_epoch(self, epoch: int) -> float:
        """Train the rest of ``epoch`` (or until finished); its mean training loss."""
        trainer, ledger = self.trainer, self.trainer.ledger
        steps = self.step_plan(epoch)
        accumulate = trainer.config.accumulate
        done = ledger.position.batch // accumulate
        self.progress.start_epoch(epoch, total=len(steps), done=done)
        loss_sum = count = 0.0
        micro_batches = sum(len(step) for step in steps)  # once: the loop below is per step
        for index in range(done, len(steps)):
            step_started = time.perf_counter()
            local, traffic = trainer.train_step(steps[index])
            local.out_of_time = self._out_of_time()
            consumed = min((index + 1) * accumulate, micro_batches)
            ledger.position = Position(ledger.step + 1, epoch, consumed)
            summed = self._record_step(local, traffic, time.perf_counter() - step_started)
            if trainer.overlap_trial is not None:
                self._time_overlap(summed)
            loss_sum, count = loss_sum + local.loss_sum, count + local.count
            if not traffic.applied:
                self._handle_void(traffic)
            if summed.stop_requested:
                self._stop(summed)
            if self.checkpoint_due("steps"):
                save_checkpoint(trainer)
            if self._eval_due():
                self._write_eval(epoch)
            if self._finished(summed):
                self.finished = True
                break
        self.progress.end_epoch()
        if not self.finished:
            ledger.position = Position(ledger.step, epoch + 1, 0)
        total_loss, total_count = sum_across(trainer.comm, [loss_sum, count])
        return total_loss / total_count if total_count else math.nan

    def _eval_due(self) -> bool:
        every = self.trainer.config.eval_every
        return every > 0 and self.trainer.step % every == 0

    def _write_eval(self, epoch: int) -> None:
        """An evaluation between epochs (--eval-every): one 'eval' record."""
        trainer = self.trainer
        train_seconds, began = self.train_seconds(), time.perf_counter()
        test_loss, test_accuracy = trainer.evaluate()
        record = {
            "type": "eval",
            "epoch": epoch,
            "step": trainer.step,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "wall_seconds": self.elapsed(),
            "train_seconds": train_seconds,
        }
        if trainer.dataset.task == "language_model":
            record["test_perplexity"] = perplexity(test_loss)
        self.metrics.write({**record, **self._validation()})
        self.eval_seconds += time.perf_counter() - began

    def train_seconds(self) -> float:
        """Seconds since training started with evaluations left out: the clock that
        time-to-accuracy is read on (the DDP peer benchmark counts the same way)."""
        return self.elapsed() - self.eval_seconds

    def _validation(self) -> dict[str, float]:
        """val_loss, val_accuracy (and val_perplexity) when --val-fraction carved a split."""
        trainer = self.trainer
        if trainer.dataset.x_val is None:
            return {}
        val_loss, val_accuracy = trainer.evaluate("val")
        scores = {"val_loss": val_loss, "val_accuracy": val_accuracy}
        if trainer.dataset.task == "language_model":
            scores["val_perplexity"] = perplexity(val_loss)
        return scores

    def _end_epoch(self, epoch: int, train_loss: float) -> dict[str, float]:
        trainer = self.trainer
        train_seconds, began = self.train_seconds(), time.perf_counter()
        test_loss, test_accuracy = trainer.evaluate()
        result = {"train_loss": train_loss, "test_loss": test_loss, "test_accuracy": test_accuracy}
        record = {"type": "epoch", "epoch": epoch, "step": trainer.step, **result}
        if trainer.dataset.task == "language_model":
            record["test_perplexity"] = perplexity(test_loss)
        record["wall_seconds"] = self.elapsed()
        record["train_seconds"] = train_seconds
        validation = self._validation()
        self.metrics.write({**record, **validation})
        self.eval_seconds += time.perf_counter() - began
        get_logger().info(
            "epoch %d/%d  train loss %.4f  test loss %.4f  test acc %.4f%s",
            epoch + 1,
            trainer.config.epochs,
            train_loss,
            test_loss,
            test_accuracy,
            f"  val acc {validation['val_accuracy']:.4f}" if validation else "",
        )
        if self.checkpoint_due("epochs"):
            save_checkpoint(trainer)
        return result

    def run(self) -> dict[str, float]:
        """Train the remaining epochs; (train loss, test loss, test accuracy) at the end."""
        trainer = self.trainer
        result = {"train_loss": math.nan, "test_loss": math.nan, "test_accuracy": math.nan}
        for epoch in range(trainer.ledger.position.epoch, trainer.config.epochs):
            if self.finished or 0 < trainer.config.max_steps <= trainer.step:
                break
            result = self._end_epoch(epoch, self.run_epoch(epoch))
        if math.isnan(result["test_loss"]):  # resumed after the last epoch
            result["test_loss"], result["test_accuracy"] = trainer.evaluate()
        return result
