"""One flat float32 gradient buffer per rank, and the per-tensor views into it.

Every parameter's gradient lives in one contiguous array in layout order, so
the dense Allreduce, the finiteness check, host copies and the optimizer each
see one array, while the codec addresses the same memory tensor by tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from adacomp_mpi.codec.finite import all_finite
from adacomp_mpi.codec.specs import TensorSpec


@dataclass(frozen=True)
class GradientBuffer:
    """``flat`` holds every gradient; ``views[name]`` is one tensor's slice of it."""

    flat: np.ndarray
    views: Mapping[str, np.ndarray]

    @classmethod
    def over(cls, flat: np.ndarray, specs: Sequence[TensorSpec]) -> GradientBuffer:
        """Views of ``flat`` (float32, 1-D, exactly the layout's size) per tensor."""
        offsets = np.cumsum([0, *(spec.numel for spec in specs)]).tolist()
        if flat.dtype != np.float32 or flat.ndim != 1 or flat.size != offsets[-1]:
            raise ValueError(
                f"gradient buffer must be 1-D float32 of {offsets[-1]} elements, "
                f"got {flat.dtype} {flat.shape}"
            )
        views = {
            spec.name: flat[start:stop]
            for spec, start, stop in zip(specs, offsets[:-1], offsets[1:], strict=True)
        }
        return cls(flat, views)

    @classmethod
    def zeros(cls, specs: Sequence[TensorSpec]) -> GradientBuffer:
        return cls.over(np.zeros(sum(spec.numel for spec in specs), np.float32), specs)

    def is_finite(self) -> bool:
        """No NaN or Inf anywhere: one BLAS dot, no temporary, 2x faster than
        a sum (``codec.finite.all_finite``; huge finite values pass)."""
        return all_finite(self.flat)
