"""Torch gradients in one flat buffer that NumPy and the exchange see directly.

Every parameter's ``.grad`` is a view into one flat float32 tensor (what DDP
calls gradient-as-bucket-view), so autograd accumulates straight into the
buffer the codec reads, and zeroing, host copies and the finiteness check are
one operation each instead of one per tensor. On the CPU the NumPy buffer is
the gradient storage itself (no copies); on a GPU it is a pinned host buffer,
filled with one copy after backward and copied back once after the exchange.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from adacomp_mpi.codec.specs import TensorSpec
from adacomp_mpi.dist.buffer import GradientBuffer


class GradientBridge:
    """The flat gradient tensor, its host twin, and the views the codec uses."""

    def __init__(self, params: Sequence[torch.nn.Parameter], specs: Sequence[TensorSpec]) -> None:
        self.params = list(params)
        device = self.params[0].device if self.params else torch.device("cpu")
        total = sum(spec.numel for spec in specs)
        self.flat = torch.zeros(total, dtype=torch.float32, device=device)
        self.offsets = [0]  # where each parameter's gradient starts, and the end
        for param in self.params:
            start = self.offsets[-1]
            param.grad = self.flat[start : start + param.numel()].view_as(param)
            self.offsets.append(start + param.numel())
        self.on_host = device.type == "cpu"
        if self.on_host:
            self.host_flat = self.flat
        else:
            self.host_flat = torch.empty(total, dtype=torch.float32, pin_memory=True)
        self.buffer = GradientBuffer.over(self.host_flat.numpy(), specs)

    def zero(self) -> None:
        self.flat.zero_()

    def to_host(self) -> GradientBuffer:
        if not self.on_host:
            self.host_flat.copy_(self.flat)
        return self.buffer

    def from_host(self) -> None:
        if not self.on_host:
            self.flat.copy_(self.host_flat, non_blocking=True)


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, to prove replicas are identical."""
    digest = hashlib.sha256()
    for tensor in [*module.parameters(), *module.buffers()]:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
