"""Model zoo: a registry from CLI name to a builder of an ``nn.Module``.

Every builder takes the shape of the data it will see (``ModelInputs``) so the
same model name works on any dataset of a compatible task. A name with a ':'
(``PATH.py:FUNCTION``, ``package.module:FUNCTION``) is the user's own builder,
see ``user.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .char_lstm import CharLSTMConfig, build_char_lstm
from .cnn import CNNConfig, build_cnn
from .mlp import MLPConfig, build_mlp
from .options import apply_options
from .seq_lstm import SeqLSTMConfig, build_seq_lstm
from .transformer import TransformerConfig, build_transformer
from .user import build_user_model, is_user_model, user_model_digest


@dataclass(frozen=True)
class ModelInputs:
    """What a model needs to know about its data."""

    input_shape: tuple[int, ...]
    num_classes: int
    task: str = "classify"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, its default sizes, the tasks it can train on."""

    build: Callable[[ModelInputs, Any], nn.Module]
    config: Any  # a frozen dataclass instance; --model-option overrides its fields
    tasks: tuple[str, ...] = ("classify",)
    lr: Mapping[str, float] = field(default_factory=lambda: dict(GENERIC_LR))  # per optimizer


# Learning rates that train each model (docs/RESULTS.md): used unless --lr is given.
GENERIC_LR = {"sgd": 0.05, "adam": 0.001}
MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(build=build_mlp, config=MLPConfig()),
    "cnn": ModelEntry(build=build_cnn, config=CNNConfig(), lr={"sgd": 0.01, "adam": 0.001}),
    "char_lstm": ModelEntry(
        build=build_char_lstm,
        config=CharLSTMConfig(),
        tasks=("language_model",),
        lr={"sgd": 0.5, "adam": 0.003},
    ),
    "seq_lstm": ModelEntry(
        build=build_seq_lstm, config=SeqLSTMConfig(), lr={"sgd": 0.05, "adam": 0.003}
    ),
    "transformer": ModelEntry(
        build=build_transformer, config=TransformerConfig(), tasks=("language_model",)
    ),
}


def default_lr(model: str, optimizer: str) -> float:
    """The learning rate a model trains with under ``optimizer`` (user models
    and unknown names get the generic one)."""
    entry = MODELS.get(model)
    table = entry.lr if entry is not None else GENERIC_LR
    return table.get(optimizer, GENERIC_LR.get(optimizer, 0.05))


def build_model(
    name: str, inputs: ModelInputs, options: Mapping[str, str] | None = None
) -> nn.Module:
    """Build model ``name`` for ``inputs`` with ``options`` (KEY=VALUE sizes);
    ValueError names the choices. A user model gets ``options`` as strings and
    checks its own task; any failure in its code is one ValueError line."""
    if is_user_model(name):
        return build_user_model(name, inputs, options)
    try:
        entry = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None
    if inputs.task not in entry.tasks:
        raise ValueError(f"model {name!r} cannot train on a {inputs.task!r} dataset")
    return entry.build(inputs, apply_options(entry.config, options or {}, model=name))


__all__ = [
    "MODELS",
    "ModelEntry",
    "ModelInputs",
    "build_model",
    "default_lr",
    "user_model_digest",
]
