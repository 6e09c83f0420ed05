"""A whole training job, start to finish: what ``adacomp-train`` runs on every rank."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adacomp_mpi.common.errors import StopTraining, UsageError
from adacomp_mpi.common.files import (
    atomic_symlink,
    atomic_write_json,
    check_writable_dir,
    make_fresh_dir,
)
from adacomp_mpi.common.log import get_logger
from adacomp_mpi.datasets.standardize import standardization
from adacomp_mpi.dist.agree import agree
from adacomp_mpi.dist.communicator import Communicator
from adacomp_mpi.dist.launch import describe_launch
from adacomp_mpi.dist.watchdog import GRACE_SECONDS, Watchdog
from adacomp_mpi.report.schema import CONFIG_FILE, METRICS_FILE

from .build import (
    build_trainer,
    check_config,
    choose_device,
    cores_per_rank,
    set_compute_threads,
)
from .config import CHECKPOINTS_DIR, LATEST_LINK, RUNS_DIR, TrainConfig
from .gradients import parameter_digest
from .loop import Loop
from .metrics import MetricsWriter
from .model_file import MODEL_FILE, save_model
from .progress import make_progress
from .resume import maybe_resume
from .runinfo import run_config
from .signals import EXIT_NONFINITE, StopRequest
from .summary import build_summary
from .tensorboard import TENSORBOARD_DIR, TeeMetrics, tensorboard_sinks

SUMMARY_FILE = "summary.json"
# What --overwrite clears of an earlier run in OUTPUT_DIR (nothing else there).
OLD_RUN_FILES = (SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, MODEL_FILE)
OLD_RUN_DIRS = (CHECKPOINTS_DIR, TENSORBOARD_DIR)
RUN_NAME_FORMAT = "%Y%m%d-%H%M%S"
HINT_STEPS = 5  # the first steps whose mean loss the first epoch's is compared with


def _latest_target() -> Path | None:
    """The run RUNS_DIR/latest points at (or is, if an old version made it a directory)."""
    link = RUNS_DIR / LATEST_LINK
    if link.is_symlink():
        target = Path(os.readlink(link))
        return target if target.is_absolute() else RUNS_DIR / target
    return link if link.is_dir() else None


def _fresh_run_dir() -> Path:
    """A new RUNS_DIR/<YYYYmmdd-HHMMSS>, with RUNS_DIR/latest pointing at it."""
    fresh = make_fresh_dir(RUNS_DIR, time.strftime(RUN_NAME_FORMAT))
    link = RUNS_DIR / LATEST_LINK
    if link.is_dir() and not link.is_symlink():  # the fixed output dir of older versions
        kept = make_fresh_dir(RUNS_DIR, f"old-latest-{time.strftime(RUN_NAME_FORMAT)}")
        os.replace(link, kept / LATEST_LINK)
        get_logger().info("moved the old %s directory to %s", link, kept / LATEST_LINK)
    atomic_symlink(link, fresh.name)
    return fresh


def _pick_output_dir(config: TrainConfig) -> Path:
    """Rank 0: where this run writes. An explicit --output-dir; else, for
    --resume auto, the run RUNS_DIR/latest points at; else a fresh directory."""
    if config.overwrite and config.resume is not None:
        raise UsageError("--overwrite starts the run afresh and --resume continues it: give one")
    if config.output_dir is not None:
        _check_previous_run(config.output_dir, config)
        return config.output_dir
    if config.resume == "auto" and (latest := _latest_target()) is not None:
        get_logger().info(
            "--resume auto without --output-dir: continuing %s -> %s",
            RUNS_DIR / LATEST_LINK,
            latest,
        )
        return latest
    if config.resume not in (None, "auto") and (owner := _run_of(Path(config.resume))):
        get_logger().info("--resume without --output-dir: continuing in %s", owner)
        return owner
    return _fresh_run_dir()


def _run_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint was saved in (RUN/checkpoints/<step-N>),
    so that resuming one continues its own run, as --resume auto does."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == CHECKPOINTS_DIR else None


def _check_previous_run(output_dir: Path, config: TrainConfig) -> None:
    """Refuse to write over a finished run unless --resume or --overwrite says so;
    with --overwrite, clear that run's files first."""
    if config.overwrite:
        for name in OLD_RUN_FILES:
            (output_dir / name).unlink(missing_ok=True)
        for name in OLD_RUN_DIRS:
            if (output_dir / name).is_dir():
                shutil.rmtree(output_dir / name)
        return
    if config.resume is None and (output_dir / SUMMARY_FILE).is_file():
        raise UsageError(
            f"{output_dir} already holds a finished run ({SUMMARY_FILE}); pass --overwrite "
            "to replace it, --resume auto to continue it, or another --output-dir"
        )


def _resolve_outputs(config: TrainConfig, comm: Communicator) -> TrainConfig:
    """Collective: rank 0 decides the output directory, every rank gets it."""
    check_config(config)  # every rank: a contradiction is refused before any file
    picked = agree(comm, lambda: str(_pick_output_dir(config)) if comm.rank == 0 else None)
    return dataclasses.replace(config, output_dir=Path(comm.broadcast_object(picked)))


class GrowthHint:
    """Rank 0, npz without --standardize: a hint when the first epoch's mean
    training loss is above the median loss of its first steps (the loss grows)."""

    def __init__(self) -> None:
        self.first: list[float] = []
        self.done = False

    def write(self, record: dict[str, Any]) -> None:
        if self.done:
            return
        if record.get("type") == "step" and len(self.first) < HINT_STEPS:
            self.first.append(record["loss"])
        elif record.get("type") == "epoch":
            self.done = True
            start = sorted(self.first)[len(self.first) // 2] if self.first else math.inf
            if not record["train_loss"] <= start:  # grew, or became NaN
                get_logger().info(
                    "hint: the loss is growing; features in raw ranges train poorly "
                    "— try --standardize"
                )

    def close(self) -> None:
        return None


def _check_outputs(config: TrainConfig, rank: int) -> None:
    """Rank 0 writes every output file: fail early if it could not."""
    if rank != 0:
        return
    for directory in {config.output_dir, config.summary_path.parent}:
        if reason := check_writable_dir(directory):
            raise UsageError(reason)


def _failure(summary: dict, model: nn.Module, config: TrainConfig) -> str | None:
    """Why the run's result is not a trained model, or None."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return "the final parameters are not finite"
    if not math.isfinite(summary["test_loss"]):
        return f"the final test loss is {summary['test_loss']}"
    skipped, steps = summary["skipped_steps"], summary["steps"]
    if steps and skipped > config.max_skipped_fraction * steps:
        return (
            f"{skipped} of {steps} steps were skipped as non-finite "
            f"(more than --max-skipped-fraction {config.max_skipped_fraction})"
        )
    return None


def train(config: TrainConfig, comm: Communicator, *, stop: StopRequest | None = None) -> dict:
    """Run a whole training job; rank 0 writes and every rank returns the summary.

    Raises StopTraining (exit 3) after writing the summary when the result is
    not a trained model (diverged, or too many skipped steps).
    """
    watchdog = Watchdog(
        rank=comm.rank, timeout=config.stall_timeout, grace=GRACE_SECONDS, abort=comm.abort
    ).start()
    try:
        return _train(config, comm, stop=stop, watchdog=watchdog)
    finally:
        watchdog.stop()


def _train(
    config: TrainConfig, comm: Communicator, *, stop: StopRequest | None, watchdog: Watchdog
) -> dict:
    started = time.perf_counter()
    config = _resolve_outputs(config, comm)
    agree(comm, lambda: _check_outputs(config, comm.rank))
    launch = describe_launch(comm)
    device = choose_device(launch, comm.rank)
    # The encoder thread gets a core of its own on the CPU, or none at all.
    encoder_core = config.overlap != "off" and cores_per_rank(launch, comm.rank) >= 2
    on_cpu = device.type == "cpu"
    set_compute_threads(launch, comm.rank, reserve=int(encoder_core and on_cpu))
    trainer = build_trainer(config, comm, device, spare_core=encoder_core or not on_cpu)
    trainer.heartbeat = watchdog
    maybe_resume(trainer)
    if comm.rank == 0:
        atomic_write_json(
            config.output_dir / CONFIG_FILE,
            run_config(config, world_size=comm.size, model_sha256=trainer.model_sha256),
        )
    get_logger().info(
        "model %s on %s: %d train / %d test samples, %d parameters, compression %s",
        config.model,
        config.dataset,
        len(trainer.dataset.x_train),
        len(trainer.dataset.x_test),
        trainer.ledger.numel,
        config.compression,
    )
    metrics = MetricsWriter(
        config.output_dir / METRICS_FILE if comm.rank == 0 else None,
        resume_step=trainer.step if config.resume else None,
    )
    sinks = agree(
        comm,
        lambda: tensorboard_sinks(config.output_dir, enabled=config.tensorboard and comm.rank == 0),
    )
    if comm.rank == 0 and config.dataset == "npz" and not config.standardize:
        sinks.append(GrowthHint())
    metrics = TeeMetrics(metrics, sinks)
    progress = make_progress(
        rank=comm.rank,
        quiet=config.quiet,
        epochs=config.epochs,
        total_steps=trainer.schedule.total_steps,
        world_size=comm.size,
        start_step=trainer.step,
    )
    loop = Loop(trainer=trainer, metrics=metrics, progress=progress, stop=stop or StopRequest())
    try:
        result = loop.run()
    finally:
        metrics.close()
        if trainer.overlap is not None:
            trainer.overlap.close()
    summary = build_summary(
        config,
        trainer.ledger,
        launch=launch,
        device=str(trainer.device),
        task=trainer.dataset.task,
        result=result,
        wall_seconds=time.perf_counter() - started,
        digests=comm.allgather_object(parameter_digest(trainer.model)),
    )
    failure = _failure(summary, trainer.model, config)
    summary["result"] = "trained" if failure is None else f"failed: {failure}"
    if comm.rank == 0:
        save_model(
            config.output_dir / MODEL_FILE,
            trainer.model,
            config,
            standardization=standardization(trainer.dataset),
        )
        summary["model_file"] = str(config.output_dir / MODEL_FILE)
        atomic_write_json(config.summary_path, summary)
    if failure is not None:
        raise StopTraining(f"the run did not train: {failure}", exit_code=EXIT_NONFINITE)
    return summary
