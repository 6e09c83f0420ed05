"""Options about what a run writes and reads around the training itself:
rerunning into a finished run's directory, TensorBoard scalars, and
standardizing a user's own features.

Kept apart from cli/train.py so each module stays small; ``output_options``
applies them all to the command.
"""

from __future__ import annotations

import click

from adacomp_mpi.train.config import TrainConfig

from .common import fail
from .options import option_group

DEFAULTS = TrainConfig()


def _tensorboard_importable(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """--tensorboard without the package: one line and exit 2, before MPI starts."""
    if value:
        from adacomp_mpi.train.tensorboard import missing_reason

        if reason := missing_reason():
            fail(reason)
    return value


OUTPUTS = [
    click.option(
        "--overwrite",
        is_flag=True,
        default=DEFAULTS.overwrite,
        help="OUTPUT_DIR holds a finished run: clear its files (summary.json, metrics.jsonl, "
        "config.json, model.pt, checkpoints/, tensorboard/) and start afresh.",
    ),
    click.option(
        "--tensorboard",
        is_flag=True,
        default=DEFAULTS.tensorboard,
        callback=_tensorboard_importable,
        help="Also write TensorBoard scalars to OUTPUT_DIR/tensorboard "
        "(pip install 'adacomp-mpi[tensorboard]').",
    ),
    click.option(
        "--standardize",
        is_flag=True,
        default=DEFAULTS.standardize,
        help="--dataset npz: scale every feature by the training split's mean and std "
        "(test alike; saved in model.pt).",
    ),
]


output_options = option_group(OUTPUTS)  # decorator: every output option on a click command
