"""Run the real ``adacomp-train`` CLI with an exception injected on one rank.

    mpiexec -n 3 python crash_on_rank.py --rank 1 --step 5 --stamp FILE -- [train options]

``Trainer.train_step`` raises ``RuntimeError`` on rank ``--rank`` when it is
about to take step ``--step`` (0-based global step), after writing
``time.time()`` to ``--stamp`` so a test can time the job's death from the
moment of the fault. Everything else is the unmodified CLI, including its
handler for unexpected errors (``[rank/size] fatal error`` and MPI_Abort).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from mpi4py import MPI

from adacomp_mpi.cli.main import main
from adacomp_mpi.train.trainer import Trainer


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, required=True, help="rank that raises")
    parser.add_argument("--step", type=int, required=True, help="0-based step at which it raises")
    parser.add_argument("--stamp", type=Path, required=True, help="file for the fault's time")
    parser.add_argument("train", nargs=argparse.REMAINDER, help="-- then adacomp-train options")
    args = parser.parse_args(argv)
    rest = args.train[1:] if args.train[:1] == ["--"] else args.train
    return args, rest


def inject(*, rank: int, step: int, stamp: Path) -> None:
    """Patch ``Trainer.train_step`` to raise on ``rank`` at ``step``."""
    original = Trainer.train_step
    here = MPI.COMM_WORLD.Get_rank()

    def train_step(self: Trainer, rows: Any) -> Any:
        if here == rank and self.step == step:
            stamp.write_text(repr(time.time()))
            raise RuntimeError(f"injected fault on rank {rank} at step {step}")
        return original(self, rows)

    Trainer.train_step = train_step  # type: ignore[method-assign]


if __name__ == "__main__":
    options, train_args = parse()
    inject(rank=options.rank, step=options.step, stamp=options.stamp)
    main(train_args)
