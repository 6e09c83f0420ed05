"""Options of the accuracy remedies for compressed training: momentum
compensation, momentum correction with masking, Adam preconditioning and
compressing 1-D tensors (rules and measurements in docs/CODEC.md).

Kept apart from cli/train.py so each module stays small; ``accuracy_options``
applies them all to the command.
"""

from __future__ import annotations

import click

from adacomp_mpi.codec.velocity import MASKING_RULES
from adacomp_mpi.train.config import TrainConfig

from .options import option_group

DEFAULTS = TrainConfig()


class CompressedMomentumType(click.ParamType):
    """A momentum in [0, 1), or ``off``."""

    name = "M|off"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() == "off":
            return None
        try:
            momentum = float(str(value))
        except ValueError:
            self.fail(f"{value!r} is neither a momentum in [0, 1) nor 'off'", param, ctx)
        if not 0.0 <= momentum < 1.0:
            self.fail(f"{value!r} is not in [0, 1) (or 'off')", param, ctx)
        return momentum


ACCURACY = [
    click.option(
        "--compressed-momentum",
        type=CompressedMomentumType(),
        default=DEFAULTS.compressed_momentum,
        show_default=True,
        help="Momentum compensation with a residue (adacomp, scalecom): the residue's "
        "delay already acts as momentum, so SGD momentum (Adam: beta1) above M is "
        "lowered to M, and SGD's lr scaled by (1 - M) / (1 - momentum) to keep the "
        "step length. 'off': the optimizer as asked.",
    ),
    click.option(
        "--remedy-min-bin",
        type=click.IntRange(min=0),
        default=DEFAULTS.remedy_min_bin,
        show_default=True,
        help="Momentum compensation only for tensors with L_T >= N: finer-binned ones "
        "(conv, L_T 50) keep the asked momentum and lr. 0: every tensor.",
    ),
    click.option(
        "--momentum-correction/--no-momentum-correction",
        default=DEFAULTS.momentum_correction,
        show_default=True,
        help="AdaComp or scalecom with SGD-momentum: every rank keeps a local velocity, "
        "sends it instead of the gradient and zeroes it where sent; the optimizer then "
        "steps plain SGD. Does nothing for Adam or without a residue. Weight decay goes "
        "into the local gradient, --clip-grad-norm clips the local gradient (at the "
        "norm / sqrt(ranks)).",
    ),
    click.option(
        "--momentum-masking",
        type=click.Choice(["auto", *MASKING_RULES]),
        default=DEFAULTS.momentum_masking,
        show_default=True,
        help="With --momentum-correction: the compressed tensors whose velocity is "
        "zeroed where sent (DGC's masking, a lower step where elements are sent often): "
        "all, recurrent (LSTM/GRU weights) or none. Unmasked tensors run at "
        "--compressed-momentum with the step length kept. auto: recurrent for "
        "adacomp, all for scalecom (docs/CODEC.md).",
    ),
    click.option(
        "--adam-preconditioning/--no-adam-preconditioning",
        default=DEFAULTS.adam_preconditioning,
        show_default=True,
        help="AdaComp or scalecom with Adam: every rank divides its gradient by "
        "sqrt(s) + eps before the codec, s its estimate of the mean gradient's second "
        "moment (docs/CODEC.md), and the optimizer applies the mean with Adam's first "
        "moment only (SGD, momentum = dampening = beta1). "
        "Weight decay and --clip-grad-norm act on the local gradient, as with "
        "--momentum-correction.",
    ),
    click.option(
        "--compress-vectors/--no-compress-vectors",
        default=DEFAULTS.compress_vectors,
        help="Also compress biases and other 1-D tensors of at least --dense-below "
        "elements (L_T: --bin-size other=N).",
    ),
]


accuracy_options = option_group(ACCURACY)  # decorator: every accuracy option on a click command
