"""The codec's per-rank state: the residues, checkpointable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .indexcoding import METHOD_NAMES
from .preconditioner import SecondMoments
from .selection import SCALE_RULES, Workspace
from .specs import TensorSpec
from .velocity import MASKING_RULES, Velocities

SHARED_VALUE_TYPES = ("fp16", "fp32")  # the keys of shared_indices.VALUE_TYPES
# The keys of ``CodecState.state_dict()`` that hold {tensor name: float32 array}.
ARRAY_KEYS = ("residues", "velocities", "second_moments", "adam_means")


@dataclass(frozen=True)
class CodecConfig:
    """Switchable codec rules (see ``adacomp.SCALE_RULES`` and ``indexcoding``).

    ``momentum`` > 0 turns on momentum correction with masking (``velocity``):
    each rank keeps a local velocity and the codec sends it in place of the
    gradient; the optimizer must then apply plain SGD, without momentum.
    ``momentum_masking``: which compressed tensors masking applies to (a key
    of ``velocity.MASKING_RULES``); the others run at ``unmasked_momentum``
    (None: ``momentum``) with the step length kept (``velocity``).
    ``momentum_min_bin``: tensors that AdaComp bins finer than this keep no
    velocity (their optimizer applies their momentum after averaging).
    """

    scale_rule: str = "mean_abs"
    index_coding: str = "auto"
    momentum: float = 0.0
    momentum_min_bin: int = 0
    momentum_masking: str = "all"
    unmasked_momentum: float | None = None
    shared_beta: float = 1.0  # shared-index mode: residue low-pass filter (1: plain feedback)
    shared_values: str = "fp32"  # shared-index mode: value type in the Allreduce
    adam_beta2: float = 0.0  # Adam preconditioning's second-moment rate; 0: off
    adam_eps: float = 1e-8  # Adam preconditioning's epsilon, as torch's Adam
    adam_ranks: int = 1  # Adam preconditioning: N, the ranks whose mean is averaged

    def __post_init__(self) -> None:
        if not 0 <= self.adam_beta2 < 1:
            raise ValueError(f"adam beta2 must be in [0, 1), got {self.adam_beta2}")
        if self.adam_eps <= 0:
            raise ValueError(f"adam eps must be > 0, got {self.adam_eps}")
        if self.adam_ranks < 1:
            raise ValueError(f"adam ranks must be >= 1, got {self.adam_ranks}")
        if self.adam_beta2 > 0 and self.momentum > 0:
            raise ValueError("momentum correction and Adam preconditioning exclude each other")
        if not 0.0 < self.shared_beta <= 1.0:
            raise ValueError(f"shared beta must be in (0, 1], got {self.shared_beta}")
        if self.shared_values not in SHARED_VALUE_TYPES:
            raise ValueError(
                f"unknown value type {self.shared_values!r}; choose from {SHARED_VALUE_TYPES}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.momentum_masking not in MASKING_RULES:
            raise ValueError(
                f"unknown masking rule {self.momentum_masking!r}; "
                f"choose from {sorted(MASKING_RULES)}"
            )
        if self.unmasked_momentum is not None and not 0 <= self.unmasked_momentum < 1:
            raise ValueError(f"unmasked momentum must be in [0, 1), got {self.unmasked_momentum}")
        if self.scale_rule not in SCALE_RULES:
            raise ValueError(
                f"unknown scale rule {self.scale_rule!r}; choose from {sorted(SCALE_RULES)}"
            )
        if self.index_coding not in METHOD_NAMES:
            raise ValueError(
                f"unknown index coding {self.index_coding!r}; choose from {sorted(METHOD_NAMES)}"
            )


@dataclass
class CodecState:
    """Everything the encoder carries from step to step on one rank.

    The residues (and, with momentum correction, the local velocities; with
    Adam preconditioning, the second moments and their step count) are
    training state: dropping them loses gradient mass, so checkpoints must
    store ``state_dict()``.
    """

    specs: tuple[TensorSpec, ...]
    config: CodecConfig = field(default_factory=CodecConfig)
    residues: list[np.ndarray] = field(init=False)
    # Exchanges done so far: the shared-index mode picks its leader from it,
    # so it must survive a resume like the residues.
    exchanges: int = field(init=False, default=0)
    # A compression warm-up (the trainer sets it each step from the step alone,
    # so it is not saved): AdaComp bins of L_T // bin_divisor elements, at least 2.
    bin_divisor: int = field(init=False, default=1)
    velocities: Velocities | None = field(init=False, default=None)
    second_moments: SecondMoments | None = field(init=False, default=None)
    workspace: Workspace = field(init=False, repr=False, default_factory=Workspace)

    def __post_init__(self) -> None:
        self.specs = tuple(self.specs)
        self.residues = [np.zeros(s.numel if s.compress else 0, np.float32) for s in self.specs]
        if self.config.momentum > 0:
            self.velocities = Velocities(
                self.specs,
                self.config.momentum,
                min_bin=self.config.momentum_min_bin,
                masking=self.config.momentum_masking,
                unmasked_momentum=self.config.unmasked_momentum,
            )
        if self.config.adam_beta2 > 0:
            self.second_moments = SecondMoments(
                self.specs,
                beta2=self.config.adam_beta2,
                eps=self.config.adam_eps,
                ranks=self.config.adam_ranks,
            )

    def state_dict(self) -> dict:
        """Plain arrays and ints, for checkpoints."""
        saved = {
            "residues": {s.name: r.copy() for s, r in zip(self.specs, self.residues, strict=True)},
            "exchanges": self.exchanges,
        }
        if self.velocities is not None:
            saved["velocities"] = {
                s.name: u.copy() for s, u in zip(self.specs, self.velocities.current, strict=True)
            }
        if (moments := self.second_moments) is not None:
            for key, arrays in (("second_moments", moments.current), ("adam_means", moments.means)):
                saved[key] = {s.name: a.copy() for s, a in zip(self.specs, arrays, strict=True)}
            saved["adam_steps"] = moments.steps
        return saved

    def load_state_dict(self, saved: dict) -> None:
        """Restore a ``state_dict``; ValueError if it belongs to another layout."""
        residues = saved["residues"]
        if set(residues) != {s.name for s in self.specs}:
            raise ValueError("codec state was saved for a different model layout")
        targets = [("residue", residues, self.residues)]
        if self.velocities is not None:
            if "velocities" not in saved:
                raise ValueError("codec state was saved without momentum correction")
            targets.append(("velocity", saved["velocities"], self.velocities.current))
        elif "velocities" in saved:
            raise ValueError("codec state was saved with momentum correction")
        if self.second_moments is not None:
            if "second_moments" not in saved:
                raise ValueError("codec state was saved without Adam preconditioning")
            targets.append(("second moment", saved["second_moments"], self.second_moments.current))
            targets.append(("mean gradient", saved["adam_means"], self.second_moments.means))
        elif "second_moments" in saved:
            raise ValueError("codec state was saved with Adam preconditioning")
        for what, arrays, buffers in targets:
            if set(arrays) != {s.name for s in self.specs}:
                raise ValueError("codec state was saved for a different model layout")
            for spec, target in zip(self.specs, buffers, strict=True):
                source = np.asarray(arrays[spec.name], np.float32)
                if source.shape != target.shape:
                    raise ValueError(f"{what} {spec.name}: shape {source.shape} != {target.shape}")
        for _, arrays, buffers in targets:  # every array checked: now copy
            for spec, target in zip(self.specs, buffers, strict=True):
                target[...] = np.asarray(arrays[spec.name], np.float32)
        self.exchanges = int(saved.get("exchanges", 0))  # older checkpoints: 0
        if self.second_moments is not None:
            self.second_moments.steps = int(saved["adam_steps"])


def make_state(specs: Sequence[TensorSpec], config: CodecConfig | None = None) -> CodecState:
    """A fresh state (zero residues) for this layout."""
    return CodecState(specs=tuple(specs), config=config or CodecConfig())
