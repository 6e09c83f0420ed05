"""``adacomp-train train``: the options, their validation, and the launch of a run."""

from __future__ import annotations

import traceback
from pathlib import Path

import click

from adacomp_mpi.codec.indexcoding import METHOD_NAMES
from adacomp_mpi.codec.selection import SCALE_RULES
from adacomp_mpi.common.errors import StopTraining, UsageError
from adacomp_mpi.dist.exchange import EXCHANGES
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.optim import OPTIMIZERS

from .common import fail
from .configfile import apply_config
from .options import BinSizeType, EveryType

DEFAULTS = TrainConfig()
NONFINITE_POLICIES = ("skip", "stop")


def _models() -> list[str]:
    from adacomp_mpi.models import MODELS

    return sorted(MODELS)


def _datasets() -> list[str]:
    from adacomp_mpi.datasets import DATASETS

    return sorted(DATASETS)


@click.command(context_settings={"auto_envvar_prefix": "ADACOMP", "show_default": True})
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=apply_config,
    help="TOML or JSON file of options (or a run's config.json). "
    "Precedence: command line > ADACOMP_* > this file > defaults.",
)
@click.option("--model", default=DEFAULTS.model, help="Model from the zoo (see README).")
@click.option("--dataset", default=DEFAULTS.dataset, help="Dataset name (see README).")
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
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.lr)
@click.option("--optimizer", type=click.Choice(sorted(OPTIMIZERS)), default=DEFAULTS.optimizer)
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS.momentum)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=DEFAULTS.weight_decay)
@click.option("--compression", type=click.Choice(sorted(EXCHANGES)), default=DEFAULTS.compression)
@click.option(
    "--bin-size",
    "bin_sizes",
    type=BinSizeType(),
    multiple=True,
    help="Override L_T per layer kind or parameter name, e.g. conv=50 fc=500 0.weight=200.",
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
@click.option(
    "--warmup-steps",
    type=click.IntRange(min=0),
    default=DEFAULTS.warmup_steps,
    help="Steps sent uncompressed at the start.",
)
@click.option("--seed", type=int, default=DEFAULTS.seed)
@click.option(
    "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULTS.output_dir
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
    help="Checkpoint directory to resume from, or 'auto' for the newest in OUTPUT_DIR.",
)
@click.option(
    "--on-nonfinite",
    type=click.Choice(NONFINITE_POLICIES),
    default=DEFAULTS.on_nonfinite,
    help="NaN/Inf gradient or loss on any rank: skip the step everywhere, or "
    "checkpoint the last good state and stop (exit 3).",
)
@click.option("--quiet", is_flag=True, help="Only errors.")
@click.option("--log-all-ranks", is_flag=True, help="Every rank logs, not just rank 0.")
def train(**options: object) -> None:
    """Train a model with every rank's gradients AdaComp-compressed.

    \b
    Every option can also be set with an ADACOMP_<OPTION> environment
    variable, e.g. ADACOMP_EPOCHS=3. Launch with mpiexec, mpirun or srun:
      mpiexec -n 4 adacomp-train --model mlp --dataset digits --summary s.json
      mpiexec -n 4 adacomp-train --checkpoint-every 1epoch --resume auto
    """
    options["bin_sizes"] = dict(options["bin_sizes"])
    options["checkpoint_every"], options["checkpoint_unit"] = options["checkpoint_every"]
    config = TrainConfig(**options)
    if config.model not in _models():
        raise click.BadParameter(
            f"unknown model {config.model!r}; choose from {_models()}", param_hint="'--model'"
        )
    if config.dataset not in _datasets():
        raise click.BadParameter(
            f"unknown dataset {config.dataset!r}; choose from {_datasets()}",
            param_hint="'--dataset'",
        )
    run(config)


def run(config: TrainConfig) -> None:
    """Start MPI and train.

    Exit codes: 0 done; 2 bad input (every rank); 3 stopped on a non-finite
    gradient; 75 preempted with a checkpoint written; anything unexpected on
    any rank aborts the whole job (MPI_Abort, exit 1).
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
