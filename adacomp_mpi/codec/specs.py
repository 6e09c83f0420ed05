"""What the codec knows about each tensor: size, layer kind, bin size L_T.

Torch-free on purpose: the trainer maps module types to a layer kind, and this
module turns kinds into AdaComp parameters, so the codec can be used and
tested without torch.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Paper defaults (Chen et al., AAAI 2018): L_T = 50 for convolutions,
# 500 for fully connected and recurrent layers; embeddings behave like FC.
DEFAULT_BIN_SIZES: dict[str, int] = {
    "conv": 50,
    "fc": 500,
    "recurrent": 500,
    "embedding": 500,
    "other": 500,
}
# The layer kinds a tensor can have ("other": norms, biases, custom modules).
LAYER_KINDS: tuple[str, ...] = tuple(DEFAULT_BIN_SIZES)

MAX_NUMEL = 2**32 - 1  # the wire format stores element counts as uint32


@dataclass(frozen=True)
class TensorSpec:
    """One gradient tensor as the codec sees it (flattened)."""

    name: str
    numel: int
    kind: str = "fc"
    bin_size: int = 500
    compress: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.numel <= MAX_NUMEL:
            raise ValueError(f"{self.name}: numel {self.numel} outside 0..{MAX_NUMEL}")
        if self.bin_size < 2:
            raise ValueError(f"{self.name}: bin size L_T must be >= 2, got {self.bin_size}")


@dataclass(frozen=True)
class CompressionPolicy:
    """How to pick L_T and the dense/compressed choice per tensor.

    ``bin_sizes`` overrides the paper defaults by layer kind ("conv") or by
    exact parameter name ("0.weight"); names win over kinds. Tensors with fewer
    than ``dense_below`` elements (biases, norm scales) go dense: their
    per-tensor header and index words would cost more than they save. Kind
    "other" (biases and other 1-D tensors) goes dense at any size unless
    ``compress_vectors``: an LSTM's 4 x hidden biases are large enough to pay
    for their 20-byte record header many times over.
    """

    bin_sizes: Mapping[str, int] = field(default_factory=dict)
    dense_below: int = 256
    compress_vectors: bool = False

    def spec_for(self, name: str, numel: int, kind: str) -> TensorSpec:
        bin_size = self.bin_sizes.get(name, self.bin_sizes.get(kind, DEFAULT_BIN_SIZES[kind]))
        return TensorSpec(
            name=name,
            numel=numel,
            kind=kind,
            bin_size=bin_size,
            compress=numel >= self.dense_below and (kind != "other" or self.compress_vectors),
        )


def layout_fingerprint(specs: Sequence[TensorSpec]) -> int:
    """CRC32 of the tensor layout, so a payload from another model is rejected.

    Every encode and every payload received asks for it, so it is cached per
    layout (specs are frozen: the tuple of them is a safe key).
    """
    return _fingerprint(tuple(specs))


@functools.lru_cache(maxsize=16)
def _fingerprint(specs: tuple[TensorSpec, ...]) -> int:
    text = ";".join(f"{s.name}:{s.numel}:{s.bin_size}:{int(s.compress)}" for s in specs)
    return zlib.crc32(text.encode())
