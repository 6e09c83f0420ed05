"""Bridge between torch ``.grad`` tensors and the flat NumPy arrays the codec uses.

On the CPU the arrays are views of the gradient storage (no copies); on a GPU
they are host buffers copied in before and out after the exchange.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch


class GradientBridge:
    """Flat float32 host arrays, one per parameter, keyed by tensor name in
    layout order (the codec's addressing), built once for the whole run."""

    def __init__(self, params: Sequence[torch.nn.Parameter], *, names: Sequence[str]) -> None:
        self.params = list(params)
        for param in self.params:
            param.grad = torch.zeros_like(param)  # fixed storage for the views
        self.on_host = all(p.device.type == "cpu" for p in self.params)
        if self.on_host:
            arrays = [p.grad.view(-1).numpy() for p in self.params]
        else:
            arrays = [np.empty(p.numel(), np.float32) for p in self.params]
        self.arrays: dict[str, np.ndarray] = dict(zip(names, arrays, strict=True))

    def zero(self) -> None:
        for param in self.params:
            param.grad.zero_()

    def to_host(self) -> dict[str, np.ndarray]:
        if not self.on_host:
            for param, array in zip(self.params, self.arrays.values(), strict=True):
                array[...] = param.grad.detach().reshape(-1).cpu().numpy()
        return self.arrays

    def from_host(self) -> None:
        if not self.on_host:
            for param, array in zip(self.params, self.arrays.values(), strict=True):
                param.grad.copy_(torch.from_numpy(array).view_as(param.grad))


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, to prove replicas are identical."""
    digest = hashlib.sha256()
    for tensor in [*module.parameters(), *module.buffers()]:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
