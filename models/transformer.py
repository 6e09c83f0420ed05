"""GPT-style decoder-only transformer for character language modelling.

Token + learned position embeddings (``nn.Embedding``), ``layers`` pre-norm
blocks (LayerNorm -> causal self-attention -> residual; LayerNorm -> MLP ->
residual), a final LayerNorm and a Linear head over the vocabulary.

Every weight matrix lives in a standard module so the trainer's layer kinds come
out right: the fused q/k/v and output projections and the MLP are ``nn.Linear``
("fc", compressed with the FC bin size), both embeddings are ``nn.Embedding``
("embedding"), and LayerNorm scales and biases are 1-D ("other", sent dense).

The head is *not* tied to the token embedding. Tying would list the shared
matrix once, under the module that owns it first (the embedding), so the head's
dense gradient would be compressed with the embedding's bin size and counted
as an embedding; untied, each matrix gets its own kind. For a byte vocabulary
(~100 symbols) the saving would be ~1 % of the parameters, not worth that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional

if TYPE_CHECKING:
    from . import ModelInputs

INIT_STD = 0.02  # GPT-2's initialisation scale


@dataclass(frozen=True)
class TransformerConfig:
    layers: int = 4
    width: int = 128
    heads: int = 4
    mlp_ratio: int = 4
    context: int = 64  # the longest sequence the position embedding covers
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Checked here so ``--model-option`` mistakes fail at build time, on one line.
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t only."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width)  # one FC tensor for q, k and v
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        # (N, T, 3C) -> 3 x (N, H, T, C/H)
        q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(attended.transpose(1, 2).reshape(batch, steps, width))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.width
        self.ln_attn = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(
            nn.Linear(config.width, hidden), nn.GELU(), nn.Linear(hidden, config.width)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_attn(x)))
        return x + self.drop(self.mlp(self.ln_mlp(x)))


class Transformer(nn.Module):
    """Maps token ids (N, T) int64, T <= context, to next-token logits (N, T, V)."""

    def __init__(self, vocab: int, config: TransformerConfig) -> None:
        super().__init__()
        self.context = config.context
        self.tokens = nn.Embedding(vocab, config.width)
        self.positions = nn.Embedding(config.context, config.width)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_final = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, vocab)
        self._init_weights(config.layers)

    def _init_weights(self, layers: int) -> None:
        """GPT-2 initialisation: small normal weights, zero biases, and the
        projections into the residual stream scaled down by sqrt(2 * layers) so
        the stream's variance does not grow with depth."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=INIT_STD)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for residual in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(residual.weight, std=INIT_STD / math.sqrt(2 * layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        steps = tokens.shape[1]
        if steps > self.context:
            raise ValueError(f"sequence of {steps} tokens is longer than context {self.context}")
        where = torch.arange(steps, device=tokens.device)
        x = self.drop(self.tokens(tokens) + self.positions(where))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_final(x))


def build_transformer(inputs: ModelInputs, config: TransformerConfig) -> nn.Module:
    """A Transformer over ``inputs.num_classes`` tokens; inputs must be (T,)
    windows with T <= context (the position embedding has ``context`` rows)."""
    if len(inputs.input_shape) != 1:
        raise ValueError(f"transformer needs (T,) token windows, got {inputs.input_shape}")
    if inputs.input_shape[0] > config.context:
        raise ValueError(
            f"transformer context {config.context} is shorter than the data's "
            f"{inputs.input_shape[0]}-token windows; set --model-option context="
            f"{inputs.input_shape[0]}"
        )
    return Transformer(inputs.num_classes, config)
