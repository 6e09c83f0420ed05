"""Stop requests: remember a SIGTERM/SIGUSR1/SIGINT and act on it at the next
step boundary, on every rank at once.

SLURM sends SIGTERM before killing a job (and SIGUSR1 when asked with
``--signal``); the trainer checkpoints and exits with ``EXIT_PREEMPTED``.
Ctrl-C (SIGINT, forwarded to every rank by mpiexec) checkpoints the same way
and exits with ``EXIT_INTERRUPTED``. When the main thread is blocked and
cannot reach a step boundary, ``adacomp_mpi.dist.watchdog`` ends the job.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, resubmit to continue
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C, checkpoint written
EXIT_NONFINITE = 3  # not a trained model: stopped on a non-finite step, or diverged


class StopRequest:
    """Set by a signal handler, read by the training loop."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    @property
    def interrupted(self) -> bool:
        return self.signal_name == signal.SIGINT.name

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
