"""``adacomp-train``: parse and validate options, build a TrainConfig, call the trainer."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from adacomp_mpi.adacomp import SCALE_RULES
from adacomp_mpi.config import TrainConfig
from adacomp_mpi.errors import UsageError
from adacomp_mpi.exchange import EXCHANGES
from adacomp_mpi.indexcoding import METHOD_NAMES
from adacomp_mpi.optim import OPTIMIZERS

from .options import BinSizeType

PROG = "adacomp-train"
DEFAULTS = TrainConfig()
USAGE_EXIT = 2
LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")


def _launcher_rank() -> int:
    """This process's rank as the launcher announced it (before MPI starts)."""
    for variable in LAUNCHER_RANK_VARIABLES:
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def _fail(message: str) -> None:
    """One line on rank 0, exit code 2 on every rank."""
    if _launcher_rank() == 0:
        click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(USAGE_EXIT)


class DefaultToTrain(click.Group):
    """``adacomp-train [OPTIONS]`` means ``adacomp-train train [OPTIONS]``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["train", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultToTrain, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="adacomp-mpi", prog_name=PROG)
def cli() -> None:
    """Data-parallel PyTorch training over MPI with AdaComp gradient compression.

    \b
    Example:
      mpiexec -n 4 adacomp-train --epochs 5 --compression adacomp
    """


def _models() -> list[str]:
    from adacomp_mpi.models import MODELS

    return sorted(MODELS)


def _datasets() -> list[str]:
    from adacomp_mpi.datasets import DATASETS

    return sorted(DATASETS)


@cli.command(context_settings={"auto_envvar_prefix": "ADACOMP", "show_default": True})
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
@click.option("--quiet", is_flag=True, help="Only errors.")
@click.option("--log-all-ranks", is_flag=True, help="Every rank logs, not just rank 0.")
def train(**options: object) -> None:
    """Train a model with every rank's gradients AdaComp-compressed.

    \b
    Every option can also be set with an ADACOMP_<OPTION> environment
    variable, e.g. ADACOMP_EPOCHS=3. Launch with mpiexec, mpirun or srun:
      mpiexec -n 4 adacomp-train --model mlp --dataset digits --summary s.json
    """
    options["bin_sizes"] = dict(options["bin_sizes"])
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
    _run(config)


def _run(config: TrainConfig) -> None:
    """Start MPI, train; usage errors exit 2, anything unexpected aborts every rank."""
    from adacomp_mpi.communicator import MpiCommunicator
    from adacomp_mpi.log import setup_logging
    from adacomp_mpi.trainer import train as run_training

    comm = MpiCommunicator()
    logger = setup_logging(
        rank=comm.rank, size=comm.size, quiet=config.quiet, all_ranks=config.log_all_ranks
    )
    try:
        summary = run_training(config, comm)
    except UsageError as error:
        _fail(str(error))
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click errors become one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as error:
        _fail(error.format_message().replace("\n", " "))
