"""Options of the accuracy remedies for compressed training: momentum
correction with masking and compressing 1-D tensors (rules and measurements
in docs/CODEC.md).

Kept apart from cli/train.py so each module stays small; ``accuracy_options``
applies them all to the command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from adacomp_mpi.train.config import TrainConfig

DEFAULTS = TrainConfig()
ACCURACY = [
    click.option(
        "--momentum-correction/--no-momentum-correction",
        default=DEFAULTS.momentum_correction,
        help="AdaComp with SGD-momentum: every rank keeps a local velocity, sends it "
        "instead of the gradient and zeroes it where sent; the optimizer then steps "
        "plain SGD. Weight decay goes into the local gradient, --clip-grad-norm clips "
        "the local gradient (at the norm / sqrt(ranks)).",
    ),
    click.option(
        "--compress-vectors/--no-compress-vectors",
        default=DEFAULTS.compress_vectors,
        help="Also compress biases and other 1-D tensors of at least --dense-below "
        "elements (L_T: --bin-size other=N).",
    ),
]


def accuracy_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: add every accuracy option to a click command."""
    for option in reversed(ACCURACY):
        command = option(command)
    return command
