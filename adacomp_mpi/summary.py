"""The machine-readable end-of-run summary (summary.json, written by rank 0)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .trainer import Launch, Trainer

FLOAT32_BYTES = 4
COUNTER_FIELDS = ("elements", "sent", "coded_sent", "coded_bytes", "record_bytes")


def _ratio(dense: float, sent: float) -> float | None:
    return dense / sent if sent else None


def _global_counters(trainer: Trainer) -> tuple[float, dict[str, dict[str, float]]]:
    """(bytes sent by all ranks, per-kind codec counters summed over ranks)."""
    kinds = sorted({spec.kind for spec in trainer.codec_state.specs})
    local = [float(trainer.exchange.bytes_sent)]
    for kind in kinds:
        counters = trainer.codec_state.by_kind[kind]
        local += [float(getattr(counters, name)) for name in COUNTER_FIELDS]
    values = np.asarray(local, np.float64)
    trainer.comm.allreduce_sum(values)
    per_kind = values[1:].reshape(len(kinds), len(COUNTER_FIELDS))
    return float(values[0]), {
        kind: dict(zip(COUNTER_FIELDS, row.tolist(), strict=True))
        for kind, row in zip(kinds, per_kind, strict=True)
    }


def _kind_ratios(trainer: Trainer, by_kind: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Per layer kind: dense float32 bytes / record bytes actually sent."""
    if trainer.config.compression == "none":
        return {kind: 1.0 for kind in by_kind}
    return {
        kind: _ratio(FLOAT32_BYTES * c["elements"], c["record_bytes"])
        for kind, c in by_kind.items()
    }


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
    """Collective: every rank must call it (it sums counters across ranks)."""
    config, comm = trainer.config, trainer.comm
    numel = sum(spec.numel for spec in trainer.codec_state.specs)
    dense_bytes = float(FLOAT32_BYTES * numel * trainer.step * comm.size)
    bytes_sent, by_kind = _global_counters(trainer)
    coded_sent = sum(c["coded_sent"] for c in by_kind.values())
    coded_bytes = sum(c["coded_bytes"] for c in by_kind.values())
    elements = sum(c["elements"] for c in by_kind.values())
    sent = sum(c["sent"] for c in by_kind.values())
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
        "parameters": numel,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "compression_ratio": _ratio(dense_bytes, bytes_sent),
        "compression_ratio_by_kind": _kind_ratios(trainer, by_kind),
        "bits_per_sent_element": 8 * coded_bytes / coded_sent if coded_sent else None,
        "density": sent / elements if elements else None,
        "bytes_sent": bytes_sent,
        "dense_bytes": dense_bytes,
        "wall_seconds": wall_seconds,
        "params_identical": len(set(digests)) == 1,
        "param_digest": digests[0],
        "config": config.to_dict(),
    }
    if trainer.dataset.task == "language_model":
        summary["test_perplexity"] = float(np.exp(test_loss))
    return summary
