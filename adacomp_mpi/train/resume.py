"""Save a run to a checkpoint and restore one into a run, refusing a
checkpoint that would change the training trajectory or does not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adacomp_mpi.codec.state import ARRAY_KEYS
from adacomp_mpi.common.log import get_logger
from adacomp_mpi.dist.agree import agree

from . import checkpoint, checkpoint_write
from .config import MODE_OPTIONS, PREDATED, PREDATED_PER_BIN, TRAJECTORY_OPTIONS, TrainConfig
from .trainer import Trainer


def save_checkpoint(trainer: Trainer) -> None:
    """Collective: write model, optimizer, ledger and every rank's residues."""
    trainer.heartbeat.beat("checkpoint", trainer.step)
    codec = trainer.codec_state.state_dict()
    for key in ARRAY_KEYS:
        if key in codec:
            codec[key] = {k: torch.from_numpy(v) for k, v in codec[key].items()}
    path = checkpoint_write.save(
        trainer.config.checkpoint_dir,
        comm=trainer.comm,
        step=trainer.step,
        common={
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "ledger": trainer.ledger.state_dict(),
            "config": trainer.config.to_dict(),
            "model_sha256": trainer.model_sha256,
            "loss_scale": trainer.loss_scale.state_dict() if trainer.loss_scale else None,
        },
        rank_state={"codec": codec, "torch_rng": torch.get_rng_state()},
        keep=trainer.config.keep_checkpoints,
    )
    get_logger().info("checkpoint written: %s", path)


def check_trajectory(saved: dict[str, Any], config: TrainConfig) -> None:
    """CheckpointError if resuming under ``config`` would change the run."""
    current = config.to_dict()
    # A schedule spans the whole run: then its length is part of the trajectory too.
    scheduled = ("epochs", "max_steps") if config.lr_schedule != "constant" else ()
    # An option a checkpoint predates had its default then.
    defaults = {**TrainConfig().to_dict(), **PREDATED}
    ignored = {k for mode, keys in MODE_OPTIONS.items() if mode != config.compression for k in keys}
    compared = [k for k in (*TRAJECTORY_OPTIONS, *scheduled) if k not in ignored]
    before = {k: saved.get(k, defaults[k]) for k in compared}
    if "scalecom_per_bin" in before:
        before["scalecom_per_bin"] = {**PREDATED_PER_BIN, **before["scalecom_per_bin"]}
    changed = [k for k, value in before.items() if value != current[k]]
    if changed:
        details = ", ".join(f"{k}: {before[k]!r} -> {current[k]!r}" for k in changed)
        raise checkpoint.CheckpointError(f"resume would change the training run ({details})")


def _check_model_file(saved: str | None, trainer: Trainer) -> None:
    if saved != trainer.model_sha256:
        raise checkpoint.CheckpointError(
            f"resume would change the training run (model file {trainer.config.model}: "
            f"sha256 {str(saved)[:12]}... -> {str(trainer.model_sha256)[:12]}...)"
        )


def restore(trainer: Trainer, common: dict[str, Any], rank_state: dict[str, Any]) -> None:
    """Load a checkpoint's state; refuse one whose trajectory options differ
    or whose content does not fit this model (CheckpointError, exit 2)."""
    try:
        check_trajectory(common["config"], trainer.config)
        _check_model_file(common.get("model_sha256"), trainer)
        trainer.model.load_state_dict(common["model"])
        trainer.optimizer.load_state_dict(common["optimizer"])
        trainer.ledger.load_state_dict(common["ledger"])
        if trainer.loss_scale is not None and common.get("loss_scale") is not None:
            trainer.loss_scale.load_state_dict(common["loss_scale"])
        codec = dict(rank_state["codec"])
        for key in ARRAY_KEYS:
            if key in codec:
                codec[key] = {k: v.numpy() for k, v in codec[key].items()}
        trainer.codec_state.load_state_dict(codec)
        torch.set_rng_state(rank_state["torch_rng"])
    except checkpoint.CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise checkpoint.CheckpointError(f"checkpoint does not fit this run: {message}") from None


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
    agree(comm, lambda: restore(trainer, common, rank_state))
    position = trainer.ledger.position
    get_logger().info(
        "resumed from %s at step %d (epoch %d, batch %d)",
        path,
        position.step,
        position.epoch + 1,
        position.batch,
    )
