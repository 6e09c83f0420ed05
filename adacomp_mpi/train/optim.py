"""Optimizers, applied after averaging to the decoded mean gradient, and the
hyper-parameters they are built with once the accuracy remedies have had
their say (``settings_for``).

Momentum compensation (``--compressed-momentum``, docs/CODEC.md): a residue
holds part of every gradient back for some steps, and delayed gradients act
as extra, implicit momentum (Mitliagkas et al., "Asynchrony begets momentum",
2016). On top of the optimizer's own 0.9 that is too much: AdaComp then lags
dense at an equal number of steps. Under compression the optimizer's momentum
m is lowered to M, and SGD's learning rate scaled by (1 - M) / (1 - m), so the
heavy-ball step on a steady gradient, lr / (1 - m), is what the user asked for.
Adam's first-moment rate (beta1) is lowered the same way; its step size does
not depend on beta1, so its learning rate stays.

Tensors binned finer than --remedy-min-bin (default 100: conv, L_T 50)
keep the asked momentum and lr: their residue holds an element back for few
steps, so the delay adds little momentum, and compensating them cost the CNN
2.2 points with SGD and 2.3 with Adam (docs/CODEC.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from .config import TrainConfig

COMPRESSED = ("adacomp", "scalecom")  # the modes with a residue, where the delay arises
ADAM_BETA2 = 0.999  # Adam's second-moment rate (torch's default), in the optimizer or the codec


@dataclass(frozen=True)
class OptimizerSettings:
    """What the optimizer is built with: ``momentum`` is SGD's momentum or Adam's beta1."""

    lr: float
    momentum: float
    weight_decay: float


OptimizerFactory = Callable[
    [Iterable[torch.nn.Parameter], OptimizerSettings], torch.optim.Optimizer
]

FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused (one-kernel) optimizer steps
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fused(
    kind: type[torch.optim.Optimizer], params: Iterable[torch.nn.Parameter], **options: object
) -> torch.optim.Optimizer:
    """``kind`` with torch's fused step where every parameter allows one.

    SGD: a single pass over parameter, velocity and gradient, 1.8x faster than
    the per-tensor loop on a 2 M-parameter MLP on one CPU core (0.80 against
    1.47 ms a step), bit-identical to it except in a tensor's last, partial
    vector (a few ulp there). Adam: 5x faster (1.3 against 6.4 ms), the same
    update up to rounding. Every rank runs the same kernel, so replicas stay
    identical."""
    params = list(params)  # parameters, or param groups (dicts with "params")
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    fusable = all(
        isinstance(t, torch.Tensor) and t.device.type in FUSED_DEVICES and t.dtype in FUSED_DTYPES
        for t in tensors
    )
    return kind(params, fused=fusable or None, **options)


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": lambda params, s: _fused(
        torch.optim.SGD, params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
    ),
    "adam": lambda params, s: _fused(
        torch.optim.Adam,
        params,
        lr=s.lr,
        betas=(s.momentum, ADAM_BETA2),
        weight_decay=s.weight_decay,
    ),
}

# Adam preconditioning (codec/preconditioner.py): the codec has divided by each
# rank's sqrt(v), so what is left of Adam is its first moment, an exponential
# average: SGD with dampening = momentum = beta1 (weight decay went in locally).
PRECONDITIONED_ADAM: OptimizerFactory = lambda params, s: _fused(  # noqa: E731
    torch.optim.SGD, params, lr=s.lr, momentum=s.momentum, dampening=s.momentum, weight_decay=0.0
)


# Keys of a param group that carry the momentum (SGD) or beta1 (Adam), per
# optimizer as built: what a finely binned group overrides.
MOMENTUM_KEYS: dict[str, Callable[[float], dict[str, object]]] = {
    "sgd": lambda m: {"momentum": m},
    "adam": lambda m: {"betas": (m, ADAM_BETA2)},
    "preconditioned": lambda m: {"momentum": m, "dampening": m},
}


def make_optimizer(
    name: str,
    params: Sequence[torch.nn.Parameter],
    settings: OptimizerSettings,
    *,
    preconditioned: bool = False,
    fine_bins: Sequence[bool] = (),
    asked: OptimizerSettings | None = None,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` (a key of OPTIMIZERS), or what is left of Adam
    when the codec preconditions. Parameters flagged in ``fine_bins`` (L_T below
    --remedy-min-bin) keep ``asked``'s momentum and lr, the settings before
    momentum compensation: a second param group, after the compensated one."""
    kind = "preconditioned" if preconditioned else name
    factory = PRECONDITIONED_ADAM if preconditioned else OPTIMIZERS[name]
    fine = [p for p, flag in zip(params, fine_bins, strict=True) if flag]
    if not fine or asked is None or asked.momentum == settings.momentum:
        return factory(params, settings)
    rest = [p for p, flag in zip(params, fine_bins, strict=True) if not flag]
    kept = {"params": fine, "lr": asked.lr, **MOMENTUM_KEYS[kind](asked.momentum)}
    return factory([{"params": rest}, kept] if rest else [kept], settings)


# The factor on the learning rate that keeps the step length when momentum goes
# from m to M < m, per optimizer.
LR_FACTORS: dict[str, Callable[[float, float], float]] = {
    "sgd": lambda m, target: (1.0 - target) / (1.0 - m),
    "adam": lambda m, target: 1.0,
}


def settings_for(
    config: TrainConfig, *, local_momentum: bool, preconditioned: bool = False
) -> OptimizerSettings:
    """The optimizer's settings for this run.

    ``local_momentum``: momentum correction carries momentum and weight decay in
    the codec, so the optimizer steps plain SGD. Otherwise, with a residue and
    --compressed-momentum M below the asked-for momentum, momentum compensation.
    ``preconditioned`` (Adam preconditioning): weight decay went into the local
    gradients, so the optimizer has none.
    """
    if local_momentum:
        return OptimizerSettings(lr=config.lr, momentum=0.0, weight_decay=0.0)
    decay = 0.0 if preconditioned else config.weight_decay
    asked = OptimizerSettings(config.lr, config.momentum, decay)
    target = config.compressed_momentum
    if config.compression not in COMPRESSED or target is None or config.momentum <= target:
        return asked
    factor = LR_FACTORS[config.optimizer](config.momentum, target)
    return OptimizerSettings(config.lr * factor, target, decay)


def describe_change(
    config: TrainConfig, settings: OptimizerSettings, *, local_momentum: bool
) -> str | None:
    """One log line when momentum compensation changed the optimizer (None: it did not)."""
    if local_momentum or settings.momentum == config.momentum:
        return None
    word = "momentum" if config.optimizer == "sgd" else "beta1"
    return (
        f"momentum compensation (--compressed-momentum): {word} {config.momentum:g} -> "
        f"{settings.momentum:g}, lr {config.lr:g} -> {settings.lr:g}"
    )
