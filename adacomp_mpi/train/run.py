"""A whole training job, start to finish: what ``adacomp-train`` runs on every rank."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from adacomp_mpi.common.errors import StopTraining, UsageError
from adacomp_mpi.common.files import atomic_write_json, check_writable_dir
from adacomp_mpi.common.log import get_logger
from adacomp_mpi.dist.agree import agree
from adacomp_mpi.dist.communicator import Communicator
from adacomp_mpi.dist.launch import describe_launch
from adacomp_mpi.dist.watchdog import GRACE_SECONDS, Watchdog
from adacomp_mpi.report.schema import CONFIG_FILE, METRICS_FILE

from .build import build_trainer, choose_device, cores_per_rank, set_compute_threads
from .config import TrainConfig
from .gradients import parameter_digest
from .loop import Loop
from .metrics import MetricsWriter
from .model_file import MODEL_FILE, save_model
from .progress import make_progress
from .resume import maybe_resume
from .runinfo import run_config
from .signals import EXIT_NONFINITE, StopRequest
from .summary import build_summary


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
    agree(comm, lambda: _check_outputs(config, comm.rank))
    launch = describe_launch(comm)
    device = choose_device(launch, comm.rank)
    # The encoder thread gets a core of its own on the CPU, or none at all.
    encoder_core = config.overlap and cores_per_rank(launch, comm.rank) >= 2
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
        save_model(config.output_dir / MODEL_FILE, trainer.model, config)
        summary["model_file"] = str(config.output_dir / MODEL_FILE)
        atomic_write_json(config.summary_path, summary)
    if failure is not None:
        raise StopTraining(f"the run did not train: {failure}", exit_code=EXIT_NONFINITE)
    return summary
