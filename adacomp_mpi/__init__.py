"""adacomp-mpi: data-parallel PyTorch training with AdaComp gradient compression over MPI.

The subpackages follow one training step's data flow: ``train`` (torch: the
model, gradients, loop, optimizer) hands gradients to ``codec`` (pure NumPy:
encode/decode), ``dist`` (MPI: the exchange of payloads) averages them across
ranks, and ``report`` reads what a run wrote. The codec's public API is
re-exported here.
"""

__version__ = "0.1.0"

from .codec import (
    DEFAULT_BIN_SIZES,
    CodecConfig,
    CodecState,
    CompressionPolicy,
    PayloadError,
    TensorSpec,
    accumulate,
    decode,
    decode_mean,
    encode,
    make_state,
)

__all__ = [
    "DEFAULT_BIN_SIZES",
    "CodecConfig",
    "CodecState",
    "CompressionPolicy",
    "PayloadError",
    "TensorSpec",
    "accumulate",
    "decode",
    "decode_mean",
    "encode",
    "make_state",
]


def __getattr__(name: str) -> object:
    """``adacomp_mpi.GradientAverager`` on first use only, so that codec-only
    users never import torch (the name is left out of ``__all__`` for that)."""
    if name == "GradientAverager":
        from .train.averager import GradientAverager

        return GradientAverager
    raise AttributeError(f"module 'adacomp_mpi' has no attribute {name!r}")
