"""The codec's per-rank state: the residues, checkpointable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .indexcoding import METHOD_NAMES
from .selection import SCALE_RULES, Workspace
from .specs import TensorSpec


@dataclass(frozen=True)
class CodecConfig:
    """Switchable codec rules (see ``adacomp.SCALE_RULES`` and ``indexcoding``)."""

    scale_rule: str = "mean_abs"
    index_coding: str = "auto"

    def __post_init__(self) -> None:
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

    The residues are training state: dropping them loses gradient mass, so
    checkpoints must store ``state_dict()``.
    """

    specs: tuple[TensorSpec, ...]
    config: CodecConfig = field(default_factory=CodecConfig)
    residues: list[np.ndarray] = field(init=False)
    workspace: Workspace = field(init=False, repr=False, default_factory=Workspace)

    def __post_init__(self) -> None:
        self.specs = tuple(self.specs)
        self.residues = [np.zeros(s.numel if s.compress else 0, np.float32) for s in self.specs]

    def state_dict(self) -> dict:
        """Plain arrays and ints, for checkpoints."""
        return {
            "residues": {s.name: r.copy() for s, r in zip(self.specs, self.residues, strict=True)},
        }

    def load_state_dict(self, saved: dict) -> None:
        """Restore a ``state_dict``; ValueError if it belongs to another layout."""
        residues = saved["residues"]
        if set(residues) != {s.name for s in self.specs}:
            raise ValueError("codec state was saved for a different model layout")
        for spec, target in zip(self.specs, self.residues, strict=True):
            source = np.asarray(residues[spec.name], np.float32)
            if source.shape != target.shape:
                raise ValueError(f"residue {spec.name}: shape {source.shape} != {target.shape}")
            target[...] = source


def make_state(specs: Sequence[TensorSpec], config: CodecConfig | None = None) -> CodecState:
    """A fresh state (zero residues) for this layout."""
    return CodecState(specs=tuple(specs), config=config or CodecConfig())
