"""Small convolutional classifier in the LeNet / CIFAR-10 "quick" style.

Three 5x5 conv + ReLU + 2x2 max-pool blocks, then a two-layer FC head. Pooling
uses ``ceil_mode`` so any image of at least 1x1 keeps a non-empty feature map:
28x28 -> 4x4, 32x32 -> 4x4, 8x8 digits -> 1x1. About 145 K parameters on
3x32x32, small enough to train on two CPU cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from . import ModelInputs


@dataclass(frozen=True)
class CNNConfig:
    channels: tuple[int, ...] = (32, 32, 64)
    kernel_size: int = 5
    hidden: int = 64


def image_shape(inputs: ModelInputs) -> tuple[int, int, int]:
    """(C, H, W) of the input; a flat square vector such as digits' 64 becomes (1, 8, 8)."""
    shape = tuple(inputs.input_shape)
    if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
        side = math.isqrt(shape[0])
        return (1, side, side)
    if len(shape) != 3:
        raise ValueError(f"cnn needs (C, H, W) images or a flat square vector, got {shape}")
    return shape  # type: ignore[return-value]


def build_cnn(inputs: ModelInputs, config: CNNConfig) -> nn.Module:
    """Conv blocks on a (C, H, W) image (flat square vectors are reshaped), then Linear head."""
    channels, height, width = image_shape(inputs)
    flat = len(inputs.input_shape) == 1
    layers: list[nn.Module] = [nn.Unflatten(1, (channels, height, width))] if flat else []
    for out_channels in config.channels:
        layers += [
            nn.Conv2d(channels, out_channels, config.kernel_size, padding=config.kernel_size // 2),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        channels = out_channels
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    layers += [
        nn.Flatten(),
        nn.Linear(channels * height * width, config.hidden),
        nn.ReLU(),
        nn.Linear(config.hidden, inputs.num_classes),
    ]
    return nn.Sequential(*layers)
