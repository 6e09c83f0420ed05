"""The training controls every trainer has: schedules, clipping, budgets,
accumulation, precision, evaluation cadence, starting weights.

Kept apart from cli/train.py's data, model and compression options so each
module stays small; ``training_controls`` applies them all to the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.schedule import SCHEDULES

from .common import launcher_rank
from .options import option_group

DEFAULTS = TrainConfig()
PRECISIONS = ("fp32", "bf16", "fp16")
CONTROLS = [
    click.option(
        "--dense-warmup-steps",
        type=click.IntRange(min=0),
        default=DEFAULTS.dense_warmup_steps,
        help="First optimizer steps sent uncompressed (AdaComp's dense warm-up).",
    ),
    click.option(
        "--bin-warmup-steps",
        type=click.IntRange(min=0),
        default=DEFAULTS.bin_warmup_steps,
        help="Compression warm-up (adacomp): AdaComp bins of L_T / 8, then / 4, then / 2, "
        "each for a third of the first N optimizer steps, then L_T.",
    ),
    click.option(
        "--warmup-steps",
        "deprecated_warmup_steps",
        type=click.IntRange(min=0),
        default=None,
        hidden=True,
        help="Old name of --dense-warmup-steps.",
    ),
    click.option(
        "--lr-schedule",
        type=click.Choice(sorted(SCHEDULES)),
        default=DEFAULTS.lr_schedule,
        help="Learning rate over the run: constant, step (x gamma at 1/2 and 3/4, or "
        "every --lr-step-every steps) or cosine (to 0 at the last step).",
    ),
    click.option(
        "--lr-warmup-steps",
        type=click.IntRange(min=0),
        default=DEFAULTS.lr_warmup_steps,
        help="Linear learning-rate warm-up from 0 over the first N optimizer steps.",
    ),
    click.option("--lr-step-every", type=click.IntRange(min=0), default=DEFAULTS.lr_step_every),
    click.option(
        "--lr-gamma", type=click.FloatRange(0, 1, min_open=True), default=DEFAULTS.lr_gamma
    ),
    click.option(
        "--clip-grad-norm",
        type=click.FloatRange(min=0),
        default=DEFAULTS.clip_grad_norm,
        help="Clip the averaged gradient to this global L2 norm before the optimizer "
        "(identical on every rank, as with DDP); 0: off.",
    ),
    click.option(
        "--accumulate",
        type=click.IntRange(min=1),
        default=DEFAULTS.accumulate,
        help="Micro-batches of --batch-size per optimizer step; one exchange per step.",
    ),
    click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default=DEFAULTS.precision,
        help="bf16/fp16: autocast the forward pass (for CUDA; works but is slow on CPUs); "
        "fp16 adds a dynamic loss scale kept identical on every rank.",
    ),
    click.option(
        "--max-steps",
        type=click.IntRange(min=0),
        default=DEFAULTS.max_steps,
        help="Stop after this many optimizer steps (0: --epochs decides).",
    ),
    click.option(
        "--time-limit",
        type=click.FloatRange(min=0),
        default=DEFAULTS.time_limit,
        help="Stop after this many seconds, with a checkpoint (0: no limit).",
    ),
    click.option(
        "--eval-every",
        type=click.IntRange(min=0),
        default=DEFAULTS.eval_every,
        help="Also evaluate every N optimizer steps ('eval' records); 0: per epoch only.",
    ),
    click.option(
        "--val-fraction",
        type=click.FloatRange(min=0, max=1, max_open=True),
        default=DEFAULTS.val_fraction,
        help="Hold out this share of the training data (a fixed split) and report "
        "val_loss/val_accuracy with every evaluation; 0: none.",
    ),
    click.option(
        "--init-from",
        type=click.Path(exists=True, path_type=Path),
        default=None,
        help="Start from these weights with new hyper-parameters: a model.pt, a run "
        "directory holding one, or a checkpoint directory.",
    ),
]


training_controls = option_group(CONTROLS)  # decorator: every control option on a click command


def resolve_deprecated(options: dict[str, Any]) -> None:
    """--warmup-steps still works, with a note on rank 0 to use the new name."""
    old = options.pop("deprecated_warmup_steps")
    if old is None:
        return
    if launcher_rank() == 0:
        click.echo(
            "adacomp-train: warning: --warmup-steps is now --dense-warmup-steps "
            "(steps sent uncompressed); the old name will go away",
            err=True,
        )
    options["dense_warmup_steps"] = old
