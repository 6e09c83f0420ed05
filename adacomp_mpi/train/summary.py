"""The machine-readable end-of-run summary (summary.json, written by rank 0)."""

from __future__ import annotations

from typing import Any

from adacomp_mpi.dist.launch import Launch
from adacomp_mpi.report.schema import perplexity, ratio

from .config import TrainConfig
from .ledger import Ledger
from .metrics import codec_rates, kind_ratios


def build_summary(
    config: TrainConfig,
    ledger: Ledger,
    *,
    launch: Launch,
    device: str,
    task: str,
    result: dict[str, float],
    wall_seconds: float,
    digests: list[str],
) -> dict[str, Any]:
    """From the ledger's totals, already summed over ranks step by step."""
    totals = ledger.totals
    by_kind = totals.by_kind
    dense_mode = ledger.dense_mode
    summary: dict[str, Any] = {
        "world_size": ledger.world_size,
        "hostnames": list(launch.hostnames),
        "ranks_per_host": launch.ranks_per_host(),
        "device": device,
        "compression": config.compression,
        "model": config.model,
        "dataset": config.dataset,
        "optimizer": config.optimizer,
        "epochs": config.epochs,
        "steps": ledger.step,
        "skipped_steps": totals.skipped_steps,
        "parameters": ledger.numel,
        "train_loss": result["train_loss"],
        "test_loss": result["test_loss"],
        "test_accuracy": result["test_accuracy"],
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
    if task == "language_model":
        summary["test_perplexity"] = perplexity(result["test_loss"])
    return summary
