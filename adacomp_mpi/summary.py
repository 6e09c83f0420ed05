"""The machine-readable end-of-run summary (summary.json, written by rank 0)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import codec_rates, kind_ratios, ratio

if TYPE_CHECKING:
    from .trainer import Launch, Trainer


def build_summary(
    trainer: Trainer,
    *,
    launch: Launch,
    train_loss: float,
    test_loss: float,
    test_accuracy: float,
    wall_seconds: float,
    digests: list[str],
) -> dict[str, Any]:
    """From the run's totals, already summed over ranks step by step."""
    config, comm, totals = trainer.config, trainer.comm, trainer.totals
    by_kind = totals.by_kind
    dense_mode = config.compression == "none"
    summary: dict[str, Any] = {
        "world_size": comm.size,
        "hostnames": launch.hostnames,
        "ranks_per_host": dict(Counter(launch.hostnames)),
        "device": str(launch.device),
        "compression": config.compression,
        "model": config.model,
        "dataset": config.dataset,
        "optimizer": config.optimizer,
        "epochs": config.epochs,
        "steps": trainer.step,
        "skipped_steps": totals.skipped_steps,
        "parameters": trainer.numel,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "compression_ratio": ratio(totals.dense_bytes, totals.bytes_sent),
        "compression_ratio_by_kind": kind_ratios(by_kind, dense_mode=dense_mode),
        **codec_rates(by_kind, dense_mode=dense_mode),
        "bytes_sent": totals.bytes_sent,
        "dense_bytes": totals.dense_bytes,
        "time_breakdown": totals.seconds,
        "wall_seconds": wall_seconds,
        "params_identical": len(set(digests)) == 1,
        "param_digest": digests[0],
        "config": config.to_dict(),
    }
    if trainer.dataset.task == "language_model":
        summary["test_perplexity"] = float(np.exp(min(test_loss, 700.0)))
    return summary
