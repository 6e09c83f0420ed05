"""Options of ``--compression scalecom`` (rule and measurements in
docs/SCALING.md): the leader's selection, the residue filter, the value type.

Kept apart from cli/train.py so each module stays small; ``scalecom_options``
applies them all to the command.
"""

from __future__ import annotations

import click

from adacomp_mpi.codec.shared_selection import DEFAULT_PER_BIN, SELECTION_RULES
from adacomp_mpi.codec.state import SHARED_VALUE_TYPES
from adacomp_mpi.train.config import TrainConfig

from .options import KeyCountType, bin_size_table, option_group

DEFAULTS = TrainConfig()


class PerBinType(KeyCountType):
    """``KEY=M``: elements kept per bin for a layer kind or a parameter name."""

    label, minimum, example = "M", 1, "fc=5 or conv=3"


SCALECOM = [
    click.option(
        "--scalecom-selection",
        type=click.Choice(sorted(SELECTION_RULES)),
        default=DEFAULTS.scalecom_selection,
        help="--compression scalecom: the leader keeps the top M |G| of every bin "
        "(fixed: bytes per step do not depend on the ranks), or AdaComp's adaptive rule.",
    ),
    click.option(
        "--scalecom-per-bin",
        "scalecom_per_bin",
        type=PerBinType(),
        multiple=True,
        callback=bin_size_table,
        help="--scalecom-selection fixed: M per bin by layer kind or parameter name, "
        f"e.g. fc=5 conv=3 (defaults: {' '.join(f'{k}={m}' for k, m in DEFAULT_PER_BIN.items())}).",
    ),
    click.option(
        "--scalecom-beta",
        type=click.FloatRange(0, 1, min_open=True),
        default=DEFAULTS.scalecom_beta,
        help="--compression scalecom: low-pass filter on the residue, "
        "R <- (1-beta) R + beta (G - sent); 1: plain error feedback (docs/SCALING.md).",
    ),
    click.option(
        "--scalecom-values",
        type=click.Choice(SHARED_VALUE_TYPES),
        default=DEFAULTS.scalecom_values,
        help="--compression scalecom: value type summed by the Allreduce.",
    ),
]


scalecom_options = option_group(SCALECOM)  # decorator: every scalecom option on a click command
