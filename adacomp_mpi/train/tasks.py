"""How a task scores a batch: summed loss, correct predictions, sample count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class BatchScore:
    loss: torch.Tensor  # mean loss, differentiable
    logits: torch.Tensor
    targets: torch.Tensor

    @property
    def count(self) -> int:
        return self.targets.numel()

    @property
    def correct(self) -> int:
        """Counted only when asked (evaluation): a training step never reads it."""
        return int((self.logits.detach().argmax(dim=-1) == self.targets).sum())


def _classify(logits: torch.Tensor, targets: torch.Tensor) -> BatchScore:
    return BatchScore(F.cross_entropy(logits, targets), logits, targets)


def _language_model(logits: torch.Tensor, targets: torch.Tensor) -> BatchScore:
    """Per-character cross-entropy and next-character accuracy."""
    flat_logits = logits.reshape(-1, logits.shape[-1])
    return _classify(flat_logits, targets.reshape(-1))


TASKS: dict[str, Callable[[torch.Tensor, torch.Tensor], BatchScore]] = {
    "classify": _classify,
    "language_model": _language_model,
}
