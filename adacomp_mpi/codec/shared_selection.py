"""Which positions the shared-index leader picks (docs/SCALING.md), pure NumPy.

Two rules, registered in ``SELECTION_RULES``:

* ``fixed``    -- in every bin of L_T elements (the bins of AdaComp), the M
  largest |G|; the last, shorter bin gives min(M, its length). The count per
  tensor is fixed by the layout, so the bytes per step do not depend on the
  world size or the stage of training (ScaleCom's leader top-k, bin-local).
  Ties at the M-th magnitude go to the lower position: every run picks the
  same set. Zeros are picked like any value (sending 0 changes nothing).
* ``adaptive`` -- AdaComp's own rule (``selection.select_positions``): every
  element whose look-ahead |G + dW| reaches its bin's max |G|. The count
  depends on the leader's residue, hence on N (a leader leads every N-th step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .finite import all_finite
from .selection import NonFiniteError, Workspace, select_positions
from .specs import LAYER_KINDS, TensorSpec
from .state import CodecConfig

# M per bin by layer kind (docs/SCALING.md): fc bins of 500 keep 5 (1 %, about
# AdaComp's density on Fashion-MNIST at N = 2); conv bins of 50 keep 3 (6 %: at 2
# the CNN fell 0.6 point behind AdaComp at N = 8).
DEFAULT_PER_BIN: dict[str, int] = {
    "conv": 3,
    "fc": 5,
    "recurrent": 5,
    "embedding": 5,
    "other": 5,
}

# residue, dW, spec, M, workspace, out (receives G = R + dW) -> sorted int64 positions
SelectionRule = Callable[
    [np.ndarray, np.ndarray, TensorSpec, int, Workspace, np.ndarray], np.ndarray
]


def _top_rows(rows: np.ndarray, per_bin: int) -> np.ndarray:
    """Flat positions of the ``per_bin`` largest entries of every row, sorted;
    among equal entries at the cut the lower positions win."""
    width = rows.shape[1]
    if per_bin >= width:
        return np.arange(rows.size, dtype=np.int64)
    cut = np.partition(rows, width - per_bin, axis=1)[:, width - per_bin, None]  # M-th largest
    keep = rows >= cut
    crowded = np.flatnonzero(keep.sum(axis=1) > per_bin)  # ties at the cut: too many kept
    if crowded.size:
        sub, sub_cut = rows[crowded], cut[crowded]
        tied = sub == sub_cut
        room = per_bin - (sub > sub_cut).sum(axis=1, keepdims=True)
        keep[crowded] = (sub > sub_cut) | (tied & (np.cumsum(tied, axis=1) <= room))
    return np.flatnonzero(keep).astype(np.int64, copy=False)


def top_per_bin(values: np.ndarray, *, bin_size: int, per_bin: int) -> np.ndarray:
    """Sorted positions of the ``per_bin`` largest |values| in every bin of
    ``bin_size`` consecutive elements (the last bin may be shorter)."""
    if per_bin < 1:
        raise ValueError(f"per-bin count must be >= 1, got {per_bin}")
    magnitude = np.abs(values)
    full = values.size // bin_size
    split = full * bin_size
    parts = [_top_rows(magnitude[:split].reshape(full, bin_size), per_bin)]
    if split < values.size:
        parts.append(split + _top_rows(magnitude[split:].reshape(1, -1), per_bin))
    return np.concatenate(parts)


def fixed_count(numel: int, *, bin_size: int, per_bin: int) -> int:
    """How many positions ``top_per_bin`` picks: fixed by the layout."""
    full, tail = divmod(numel, bin_size)
    return full * min(per_bin, bin_size) + min(per_bin, tail)


def _fixed(
    residue: np.ndarray,
    grad: np.ndarray,
    spec: TensorSpec,
    per_bin: int,
    workspace: Workspace,
    out: np.ndarray,
) -> np.ndarray:
    with np.errstate(over="ignore"):  # an overflow to inf is refused just below
        np.add(residue, grad, out=out)
    if not all_finite(out):
        raise NonFiniteError(f"R + dW of {spec.name!r} is not finite")
    return top_per_bin(out, bin_size=spec.bin_size, per_bin=per_bin)


def _adaptive(
    residue: np.ndarray,
    grad: np.ndarray,
    spec: TensorSpec,
    per_bin: int,
    workspace: Workspace,
    out: np.ndarray,
) -> np.ndarray:
    found, _ = select_positions(residue, grad, bin_size=spec.bin_size, workspace=workspace, out=out)
    return found.copy()  # a view of the workspace: the next tensor would overwrite it


SELECTION_RULES: dict[str, SelectionRule] = {"fixed": _fixed, "adaptive": _adaptive}


@dataclass(frozen=True)
class SharedSelection:
    """The leader's rule and, for ``fixed``, M per bin by layer kind or by
    parameter name (names win, as for ``--bin-size``)."""

    rule: str = "fixed"  # bytes flat in N, and as accurate as AdaComp at beta 0.5 (docs/SCALING.md)
    per_bin: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rule not in SELECTION_RULES:
            raise ValueError(
                f"unknown selection {self.rule!r}; choose from {sorted(SELECTION_RULES)}"
            )
        bad = {key: m for key, m in self.per_bin.items() if m < 1}
        if bad:
            raise ValueError(f"per-bin counts must be >= 1, got {bad}")

    def count_for(self, spec: TensorSpec) -> int:
        """M of this tensor's bins (fixed rule only; 0 for adaptive)."""
        if self.rule != "fixed":
            return 0
        default = DEFAULT_PER_BIN[spec.kind] if spec.kind in LAYER_KINDS else DEFAULT_PER_BIN["fc"]
        return int(self.per_bin.get(spec.name, self.per_bin.get(spec.kind, default)))

    def select(
        self,
        residue: np.ndarray,
        grad: np.ndarray,
        *,
        spec: TensorSpec,
        workspace: Workspace,
        out: np.ndarray,
    ) -> np.ndarray:
        """G = R + dW into ``out`` and the leader's positions (a new array).
        NonFiniteError when G is not finite; ``residue`` is only read."""
        rule = SELECTION_RULES[self.rule]
        return rule(residue, grad, spec, self.count_for(spec), workspace, out)


DEFAULT_SELECTION = SharedSelection()


@dataclass(frozen=True)
class ScaleComConfig(CodecConfig):
    """CodecConfig plus the shared-index leader's selection rule."""

    shared_selection: SharedSelection = field(default_factory=SharedSelection)


def selection_of(config: CodecConfig) -> SharedSelection:
    """The selection a state's config asks for (a plain CodecConfig: the default)."""
    return config.shared_selection if isinstance(config, ScaleComConfig) else DEFAULT_SELECTION


__all__ = [
    "DEFAULT_PER_BIN",
    "DEFAULT_SELECTION",
    "SELECTION_RULES",
    "ScaleComConfig",
    "SharedSelection",
    "fixed_count",
    "selection_of",
    "top_per_bin",
]
