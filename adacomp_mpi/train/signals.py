"""Preemption: remember a SIGTERM/SIGUSR1 and act on it at the next step boundary.

SLURM sends SIGTERM before killing a job (and SIGUSR1 when asked with
``--signal``); the trainer checkpoints and exits with ``EXIT_PREEMPTED``.
"""

from __future__ import annotations

import signal
from types import FrameType

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, resubmit to continue
EXIT_NONFINITE = 3  # stopped on a non-finite gradient, last good state saved


class StopRequest:
    """Set by a signal handler, read by the training loop."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> None:
        for signum in PREEMPT_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
