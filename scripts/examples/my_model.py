"""An example of your own model for ``adacomp-train``: a small MLP.

Train it with::

    mpiexec -n 2 adacomp-train --model scripts/examples/my_model.py:build \\
        --dataset digits --model-option hidden=64,32

``build`` is called as ``build(inputs, **options)``: ``inputs`` tells it the
shape of one example (``inputs.input_shape``), the number of classes and the
task; ``options`` are the ``--model-option KEY=VALUE`` pairs, values as strings.
Keep the weights in standard modules (``nn.Linear``, ``nn.Conv2d``, ``nn.LSTM``,
``nn.Embedding``): the trainer picks each tensor's AdaComp bin size from the
type of the module that owns it, and sends anything else uncompressed.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def _widths(text: str) -> tuple[int, ...]:
    """``"64,32"`` -> (64, 32); a clear error (shown as one line) for anything else."""
    widths = tuple(int(part) for part in text.split(",") if part.strip())
    if not widths or min(widths) < 1:
        raise ValueError(f"hidden={text!r}: expected positive comma-separated widths")
    return widths


def build(inputs: Any, hidden: str = "128", **unknown: str) -> nn.Module:
    """Flatten, Linear+ReLU per width in ``hidden``, then a linear classifier."""
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; this model has: hidden")
    if inputs.task != "classify":
        raise ValueError(f"this MLP classifies; it cannot train on a {inputs.task!r} dataset")
    width = math.prod(inputs.input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for size in _widths(hidden):
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, inputs.num_classes))
    return nn.Sequential(*layers)
