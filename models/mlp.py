"""Fully connected network, the paper's MNIST FC family."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from . import ModelInputs


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (256, 128)


def build_mlp(inputs: ModelInputs, config: MLPConfig) -> nn.Module:
    """Flatten, then Linear+ReLU per hidden width, then a linear classifier."""
    width = math.prod(inputs.input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for hidden in config.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, inputs.num_classes))
    return nn.Sequential(*layers)
