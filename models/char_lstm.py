"""Character-level LSTM language model (the paper's Shakespeare model, scaled for CPUs).

Embedding -> multi-layer ``nn.LSTM`` -> Linear over the vocabulary at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from . import ModelInputs


@dataclass(frozen=True)
class CharLSTMConfig:
    embedding: int = 64
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.0


class CharLSTM(nn.Module):
    """Maps token ids (N, T) int64 to next-token logits (N, T, V)."""

    def __init__(self, vocab: int, config: CharLSTMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, config.embedding)
        self.lstm = nn.LSTM(
            config.embedding,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(config.hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(self.embedding(tokens))
        return self.head(states)


def build_char_lstm(inputs: ModelInputs, config: CharLSTMConfig) -> nn.Module:
    """A CharLSTM over ``inputs.num_classes`` tokens; inputs must be (T,) windows."""
    if len(inputs.input_shape) != 1:
        raise ValueError(f"char_lstm needs (T,) token windows, got {inputs.input_shape}")
    return CharLSTM(inputs.num_classes, config)
