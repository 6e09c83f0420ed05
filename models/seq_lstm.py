"""LSTM classifier for multivariate sequences (the speech-like Japanese Vowels task).

Reads (N, T, C) float32 and classifies from the last layer's final hidden state,
which is why the sequence loaders left-pad: the real frames end at step T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from . import ModelInputs


@dataclass(frozen=True)
class SeqLSTMConfig:
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.0


class SeqLSTM(nn.Module):
    """Maps (N, T, C) sequences to class logits (N, classes)."""

    def __init__(self, channels: int, num_classes: int, config: SeqLSTMConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            channels,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(config.hidden, num_classes)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        _, (final_hidden, _) = self.lstm(sequences)
        return self.head(final_hidden[-1])


def build_seq_lstm(inputs: ModelInputs, config: SeqLSTMConfig) -> nn.Module:
    """A SeqLSTM for (T, C) samples."""
    if len(inputs.input_shape) != 2:
        raise ValueError(f"seq_lstm needs (T, C) sequences, got {inputs.input_shape}")
    return SeqLSTM(inputs.input_shape[1], inputs.num_classes, config)
