"""The trainer's side of the local updates: momentum correction (the rule:
``codec/velocity.py``) and Adam preconditioning (``codec/preconditioner.py``).

Either way the codec sends something made from this rank's own gradient; the
trainer must then (1) add weight decay to the local gradient before the codec
sees it, (2) clip the local gradient, not the averaged update, and (3) step
with plain SGD (momentum correction) or SGD with momentum = dampening = beta1
(Adam preconditioning: Adam's first moment). This module decides when either
applies and does the first two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .config import TrainConfig
from .optim import ADAM_BETA2, COMPRESSED


@dataclass(frozen=True)
class LocalUpdate:
    """What happens to this rank's gradient before the codec, with a local remedy on.

    ``momentum`` > 0: momentum correction; ``adam_beta2`` > 0: Adam
    preconditioning; both 0: nothing here applies.
    ``clip_norm`` is the local threshold: --clip-grad-norm / sqrt(ranks), as in
    DGC, so N clipped local gradients add up to about the global threshold.
    """

    momentum: float = 0.0
    adam_beta2: float = 0.0
    weight_decay: float = 0.0
    clip_norm: float = 0.0

    @property
    def active(self) -> bool:
        return self.momentum > 0 or self.adam_beta2 > 0

    @property
    def preconditioned(self) -> bool:
        return self.adam_beta2 > 0

    @torch.no_grad()
    def decay(self, param: torch.nn.Parameter) -> None:
        """g += weight_decay * w for one parameter (before its velocity update)."""
        if self.weight_decay > 0 and param.grad is not None:
            param.grad.add_(param, alpha=self.weight_decay)

    @property
    def decay_hook(self) -> Callable[[torch.nn.Parameter], None] | None:
        """``decay`` for the overlapped encoder's hooks, or None when there is none."""
        return self.decay if self.weight_decay > 0 else None

    def apply(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Weight decay into every local gradient, then local clipping."""
        if not self.active:
            return
        for param in params:
            self.decay(param)
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)


def why_not(config: TrainConfig) -> str | None:
    """Why --momentum-correction, asked for, does not apply to this run (None: it does)."""
    if not config.momentum_correction:
        return None
    reasons = {
        config.compression not in COMPRESSED: f"--compression {config.compression}",
        config.optimizer != "sgd": f"--optimizer {config.optimizer} (it applies to SGD)",
        config.optimizer == "sgd" and config.momentum == 0: "--momentum 0",
    }
    found = [text for applies, text in reasons.items() if applies]
    return found[0] if found else None


# --momentum-masking auto: AdaComp masks recurrent weights only (its ablation,
# docs/CODEC.md "Momentum-factor masking"); scalecom keeps DGC's rule, which
# is the one it was measured with.
AUTO_MASKING: dict[str, str] = {"adacomp": "recurrent", "scalecom": "all"}


def masking_rule(config: TrainConfig) -> str:
    """The codec's masking rule for this run (a key of ``velocity.MASKING_RULES``)."""
    if config.momentum_masking != "auto":
        return config.momentum_masking
    return AUTO_MASKING.get(config.compression, "all")


def unmasked_momentum(config: TrainConfig) -> float | None:
    """The momentum of the tensors momentum correction leaves unmasked:
    --compressed-momentum M where it is below --momentum (None: the asked one)."""
    lower = config.compressed_momentum
    return lower if lower is not None and lower < config.momentum else None


# L_T where Adam preconditioning is on and --bin-size does not say otherwise:
# the preconditioned u is about equally large across a bin, so more of it
# passes the look-ahead than of a raw gradient; a longer bin wins the ratio
# back (docs/CODEC.md, "Adam preconditioning": the ablation's LT700 rows).
PRECONDITIONED_BIN_SIZES: dict[str, int] = {"fc": 700, "recurrent": 700, "embedding": 700}


def effective_bin_sizes(config: TrainConfig) -> dict[str, int]:
    """This run's --bin-size table: the user's, over the preconditioned
    defaults when AdaComp preconditions (scalecom's fixed per-bin selection
    was not measured with them, so it keeps the paper's bins)."""
    longer = preconditions(config) and config.compression == "adacomp"
    defaults = PRECONDITIONED_BIN_SIZES if longer else {}
    return {**defaults, **config.bin_sizes}


def preconditions(config: TrainConfig) -> bool:
    """Whether this run's codec preconditions with Adam's second moment:
    --adam-preconditioning (the default) with Adam and a residue."""
    return (
        config.adam_preconditioning
        and config.optimizer == "adam"
        and config.compression in COMPRESSED
    )


def local_update(config: TrainConfig, world_size: int) -> LocalUpdate:
    """The local update of this run: momentum correction for AdaComp or
    scalecom with SGD-momentum, Adam preconditioning for them with Adam."""
    corrects = config.momentum_correction and why_not(config) is None
    if not corrects and not preconditions(config):
        return LocalUpdate()
    clip = config.clip_grad_norm / math.sqrt(world_size) if config.clip_grad_norm > 0 else 0.0
    return LocalUpdate(
        momentum=config.momentum if corrects else 0.0,
        adam_beta2=ADAM_BETA2 if not corrects else 0.0,
        weight_decay=config.weight_decay,
        clip_norm=clip,
    )
