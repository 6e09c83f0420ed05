"""adacomp-mpi: data-parallel PyTorch training with AdaComp gradient compression over MPI."""

__version__ = "0.1.0"

from .codec import accumulate, decode, decode_mean, encode
from .errors import PayloadError
from .specs import DEFAULT_BIN_SIZES, CompressionPolicy, TensorSpec
from .state import CodecConfig, CodecState, make_state

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
