"""How a task scores a batch: summed loss, correct predictions, sample count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class BatchScore:
    loss: torch.Tensor  # mean loss, differentiable
    correct: int
    count: int


def _classify(logits: torch.Tensor, targets: torch.Tensor) -> BatchScore:
    loss = F.cross_entropy(logits, targets)
    correct = int((logits.argmax(dim=-1) == targets).sum())
    return BatchScore(loss, correct, targets.numel())


def _language_model(logits: torch.Tensor, targets: torch.Tensor) -> BatchScore:
    """Per-character cross-entropy and next-character accuracy."""
    flat_logits = logits.reshape(-1, logits.shape[-1])
    return _classify(flat_logits, targets.reshape(-1))


TASKS: dict[str, Callable[[torch.Tensor, torch.Tensor], BatchScore]] = {
    "classify": _classify,
    "language_model": _language_model,
}
