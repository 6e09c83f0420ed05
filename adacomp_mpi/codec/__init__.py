"""The AdaComp codec: float32 gradients in, one packed uint8 payload out, and back.

Pure NumPy: this package imports neither torch nor mpi4py nor anything else of
adacomp_mpi, so it can be used and tested on its own. The data flow inside it:
``specs`` (what each tensor is) -> ``selection`` (AdaComp's bin-local choice and
the residue) -> ``indexcoding`` and ``bitpack`` (positions and signs as bits) ->
``wire`` (the self-describing payload) -> ``api`` (encode/decode); ``state``
holds what a rank carries from step to step. The rules are in docs/CODEC.md.
"""

from .api import accumulate, decode, decode_mean, encode, encode_void, restore_residues
from .errors import PayloadError
from .specs import DEFAULT_BIN_SIZES, LAYER_KINDS, CompressionPolicy, TensorSpec
from .state import CodecConfig, CodecState, make_state

__all__ = [
    "DEFAULT_BIN_SIZES",
    "LAYER_KINDS",
    "CodecConfig",
    "CodecState",
    "CompressionPolicy",
    "PayloadError",
    "TensorSpec",
    "accumulate",
    "decode",
    "decode_mean",
    "encode",
    "encode_void",
    "make_state",
    "restore_residues",
]
