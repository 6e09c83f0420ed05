"""Trainer side: map a torch model's parameters to the codec's tensor specs.

The layer kind (and so the default L_T) comes from the type of the module that
owns each parameter, looked up in a registry.
"""

from __future__ import annotations

from torch import nn

from adacomp_mpi.codec.specs import CompressionPolicy, TensorSpec

MODULE_KINDS: dict[type[nn.Module], str] = {
    nn.Conv1d: "conv",
    nn.Conv2d: "conv",
    nn.Conv3d: "conv",
    nn.ConvTranspose2d: "conv",
    nn.Linear: "fc",
    nn.Bilinear: "fc",
    nn.LSTM: "recurrent",
    nn.GRU: "recurrent",
    nn.RNN: "recurrent",
    nn.LSTMCell: "recurrent",
    nn.GRUCell: "recurrent",
    nn.Embedding: "embedding",
}


def layer_kind(module: nn.Module) -> str:
    """'conv', 'fc', 'recurrent', 'embedding', or 'other' (norms, custom)."""
    for cls in type(module).__mro__:
        if cls in MODULE_KINDS:
            return MODULE_KINDS[cls]
    return "other"


def gradient_specs(
    model: nn.Module, policy: CompressionPolicy
) -> tuple[list[TensorSpec], list[nn.Parameter]]:
    """Specs and parameters in one fixed order (module traversal order)."""
    specs, params, seen = [], [], set()
    for module_name, module in model.named_modules():
        kind = layer_kind(module)
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue  # frozen, or a tied weight already listed
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            # Biases and other vectors are never worth compressing.
            tensor_kind = kind if param.dim() > 1 else "other"
            specs.append(policy.spec_for(name, param.numel(), tensor_kind))
            params.append(param)
    return specs, params
