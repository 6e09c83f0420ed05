"""``adacomp-train train``: the options, their validation, and the launch of a run."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import click

from adacomp_mpi.codec.indexcoding import METHOD_NAMES
from adacomp_mpi.codec.selection import SCALE_RULES
from adacomp_mpi.common.errors import StopTraining, UsageError
from adacomp_mpi.dist.exchange import EXCHANGES
from adacomp_mpi.train.config import OVERLAP_MODES, TrainConfig
from adacomp_mpi.train.optim import OPTIMIZERS

from .accuracy import accuracy_options
from .common import fail
from .configfile import apply_config
from .controls import resolve_deprecated, training_controls
from .options import BinSizeType, EveryType, KeyValueType, bin_size_table, key_value_table
from .outputs import output_options
from .scalecom_options import scalecom_options
from .sources import CheckedCommand

DEFAULTS = TrainConfig()
ABORT_FLUSH_SECONDS = 0.5  # MPI_Abort can cut off output the launcher has not forwarded
NONFINITE_POLICIES = ("skip", "stop")


def _models() -> list[str]:
    from adacomp_mpi.models import MODELS

    return sorted(MODELS)


def _model_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A zoo name, or the user's ``PATH.py:FUNCTION`` / ``package.module:FUNCTION``.

    A user model's file is checked here, so a typo is one usage error naming
    it; everything else about it (importing, calling) is checked when it is
    built, on every rank.
    """
    from adacomp_mpi.models.user import describe, is_file_source, is_user_model, split_spec

    if not is_user_model(value):
        return _registered(_models, "model")(ctx, param, value)
    try:
        source, _ = split_spec(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    if is_file_source(source) and not Path(source).expanduser().is_file():
        raise click.BadParameter(f"{describe(source)} not found")
    return value


def _datasets() -> list[str]:
    from adacomp_mpi.datasets import DATASETS

    return sorted(DATASETS)


def _registered(names: Callable[[], list[str]], what: str) -> Callable[..., str]:
    """Callback refusing a name not in a registry; checked while parsing, so the
    error names the variable or config file that gave the value."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        if value not in names():
            raise click.BadParameter(f"unknown {what} {value!r}; choose from {names()}")
        return value

    return check


@click.command(
    cls=CheckedCommand,
    context_settings={"auto_envvar_prefix": "ADACOMP", "show_default": True},
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=apply_config,
    help="TOML or JSON file of options (or a run's config.json). "
    "Precedence: command line > ADACOMP_* > this file > defaults.",
)
@click.option(
    "--model",
    default=DEFAULTS.model,
    callback=_model_name,
    help="Model from the zoo (see README), or your own: PATH.py:FUNCTION or "
    "package.module:FUNCTION, called as FUNCTION(inputs, **model_options).",
)
@click.option(
    "--dataset",
    default=DEFAULTS.dataset,
    callback=_registered(_datasets, "dataset"),
    help="Dataset name (see README).",
)
@click.option(
    "--data-path",
    type=click.Path(exists=True, readable=True, path_type=Path),
    default=None,
    help="File or directory to read the dataset from (default: its standard place).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=DEFAULTS.batch_size, help="Per rank."
)
@click.option(
    "--model-option",
    "model_options",
    type=KeyValueType(),
    multiple=True,
    callback=key_value_table,
    help="A size of the zoo model, e.g. hidden=2048,1024 (mlp), channels=8,16 (cnn); "
    "repeatable (variable: ADACOMP_MODEL_OPTIONS, space-separated).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate  [default: the model's own for the optimizer, e.g. mlp 0.05, "
    "cnn 0.01 with sgd; 0.001 with adam]",
)
@click.option("--optimizer", type=click.Choice(sorted(OPTIMIZERS)), default=DEFAULTS.optimizer)
@click.option(
    "--momentum",
    type=click.FloatRange(0, 1, max_open=True),
    default=DEFAULTS.momentum,
    help="SGD momentum, or Adam's beta1.",
)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=DEFAULTS.weight_decay)
@click.option("--compression", type=click.Choice(sorted(EXCHANGES)), default=DEFAULTS.compression)
@click.option(
    "--bin-size",
    "bin_sizes",
    type=BinSizeType(),
    multiple=True,
    callback=bin_size_table,
    help="Override L_T per layer kind or parameter name, e.g. conv=50 fc=500 0.weight=200 "
    "(default: the paper's; fc, recurrent, embedding 700 under AdaComp with Adam preconditioning; "
    "variable: ADACOMP_BIN_SIZES, space-separated).",
)
@click.option(
    "--dense-below",
    type=click.IntRange(min=0),
    default=DEFAULTS.dense_below,
    help="Send tensors with fewer elements uncompressed.",
)
@click.option("--scale-rule", type=click.Choice(sorted(SCALE_RULES)), default=DEFAULTS.scale_rule)
@click.option(
    "--index-coding", type=click.Choice(sorted(METHOD_NAMES)), default=DEFAULTS.index_coding
)
@click.option("--seed", type=int, default=DEFAULTS.seed)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where rank 0 writes  [default: a fresh runs/YYYYmmdd-HHMMSS; runs/latest links "
    "to the newest]",
)
@click.option(
    "--summary",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Summary JSON path [default: OUTPUT_DIR/summary.json].",
)
@click.option(
    "--checkpoint-every",
    type=EveryType(),
    default=str(DEFAULTS.checkpoint_every),
    help="Checkpoint every N steps (N, Nsteps) or epochs (Nepochs); 0: only on preemption.",
)
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=DEFAULTS.keep_checkpoints)
@click.option(
    "--resume",
    default=None,
    help="Checkpoint directory to resume from, or 'auto' for the newest in OUTPUT_DIR "
    "(without --output-dir: in the run runs/latest links to).",
)
@click.option(
    "--on-nonfinite",
    type=click.Choice(NONFINITE_POLICIES),
    default=DEFAULTS.on_nonfinite,
    help="NaN/Inf gradient or loss on any rank: skip the step everywhere, or "
    "checkpoint the last good state and stop (exit 3).",
)
@click.option(
    "--overlap",
    type=click.Choice(OVERLAP_MODES),
    default=DEFAULTS.overlap,
    help="Encode each gradient on a worker thread while backward computes the rest "
    "(needs a spare core); auto: time the first steps both ways, keep the faster.",
)
@click.option(
    "--no-overlap",
    "overlap",
    flag_value="off",
    hidden=True,
    help="The same as --overlap off (kept for older scripts).",
)
@click.option(
    "--max-skipped-fraction",
    type=click.FloatRange(min=0, max=1),
    default=DEFAULTS.max_skipped_fraction,
    help="More steps skipped as non-finite than this share: the run failed (exit 3).",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULTS.stall_timeout,
    help="Seconds a rank may make no progress (e.g. inside a collective) before the job "
    "is aborted (exit 69); 0: never.",
)
@click.option("--quiet", is_flag=True, help="Only errors.")
@click.option("--log-all-ranks", is_flag=True, help="Every rank logs, not just rank 0.")
@training_controls
@accuracy_options
@scalecom_options
@output_options
def train(**options: object) -> None:
    """Train a model with every rank's gradients AdaComp-compressed.

    \b
    Every option can also be set with an ADACOMP_<OPTION> environment
    variable, e.g. ADACOMP_EPOCHS=3 (--bin-size: ADACOMP_BIN_SIZES); an
    ADACOMP_* variable that names no option is an error. Launch with
    mpiexec, mpirun or srun:
      mpiexec -n 4 adacomp-train --model mlp --dataset digits --summary s.json
      mpiexec -n 4 adacomp-train --checkpoint-every 1epoch --resume auto
    """
    options["checkpoint_every"], options["checkpoint_unit"] = options["checkpoint_every"]
    resolve_deprecated(options)
    if options["lr"] is None:
        from adacomp_mpi.models import default_lr

        options["lr"] = default_lr(str(options["model"]), str(options["optimizer"]))
    run(TrainConfig(**options))


def run(config: TrainConfig) -> None:
    """Start MPI and train.

    Exit codes: 0 done; 2 bad input (every rank); 3 stopped on a non-finite
    gradient, or the run did not train; 69 a rank stalled (watchdog); 75
    preempted and 130 interrupted, each with a checkpoint written; anything
    unexpected on any rank aborts the whole job (MPI_Abort, exit 1).
    """
    from adacomp_mpi.common.log import setup_logging
    from adacomp_mpi.dist.communicator import MpiCommunicator
    from adacomp_mpi.train.run import train as run_training
    from adacomp_mpi.train.signals import StopRequest

    stop = StopRequest()
    stop.install()
    comm = MpiCommunicator()
    logger = setup_logging(
        rank=comm.rank, size=comm.size, quiet=config.quiet, all_ranks=config.log_all_ranks
    )
    try:
        summary = run_training(config, comm, stop=stop)
    except UsageError as error:
        fail(str(error))
    except StopTraining as stopped:
        fail(str(stopped), exit_code=stopped.exit_code)
    except Exception:
        click.echo(f"[{comm.rank}/{comm.size}] fatal error:\n{traceback.format_exc()}", err=True)
        sys.stderr.flush()
        time.sleep(ABORT_FLUSH_SECONDS)  # let the launcher forward the traceback first
        comm.abort(1)
    else:
        ratio = summary["compression_ratio"]
        bits = summary["bits_per_sent_element"]
        logger.info(
            "done: test accuracy %.4f  compression %s  bits/sent element %s  wall %.1f s  "
            "params identical: %s  summary: %s",
            summary["test_accuracy"],
            f"{ratio:.1f}x" if ratio else "n/a",
            f"{bits:.2f}" if bits else "n/a",
            summary["wall_seconds"],
            summary["params_identical"],
            config.summary_path,
        )
