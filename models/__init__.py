"""Model zoo: a registry from CLI name to a builder of an ``nn.Module``.

Every builder takes the shape of the data it will see (``ModelInputs``) so the
same model name works on any dataset of a compatible task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from .char_lstm import CharLSTMConfig, build_char_lstm
from .cnn import CNNConfig, build_cnn
from .mlp import MLPConfig, build_mlp
from .options import apply_options
from .seq_lstm import SeqLSTMConfig, build_seq_lstm


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


MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(build=build_mlp, config=MLPConfig()),
    "cnn": ModelEntry(build=build_cnn, config=CNNConfig()),
    "char_lstm": ModelEntry(
        build=build_char_lstm, config=CharLSTMConfig(), tasks=("language_model",)
    ),
    "seq_lstm": ModelEntry(build=build_seq_lstm, config=SeqLSTMConfig()),
}


def build_model(
    name: str, inputs: ModelInputs, options: Mapping[str, str] | None = None
) -> nn.Module:
    """Build model ``name`` for ``inputs`` with ``options`` (KEY=VALUE sizes);
    ValueError names the choices."""
    try:
        entry = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}") from None
    if inputs.task not in entry.tasks:
        raise ValueError(f"model {name!r} cannot train on a {inputs.task!r} dataset")
    return entry.build(inputs, apply_options(entry.config, options or {}, model=name))


__all__ = ["MODELS", "ModelEntry", "ModelInputs", "build_model"]
