"""Never hang: a thread that ends the job when a rank stops making progress.

A rank blocked inside a collective (a peer died, the link is cut) runs no
Python code at all, so nothing on the main thread can notice. This thread
can: the main thread marks progress (``beat``) at every phase of a step, and
when no beat comes for ``timeout`` seconds the watchdog logs one line naming
the rank, step and phase and aborts the job (``MPI_Abort`` ends every rank).

Signals reach it the same way: the C-level signal handler writes the signal
number to a wakeup fd even while the main thread is blocked, so a SIGTERM or
SIGINT that the main thread cannot act on (no progress within ``grace``
seconds after it) still ends the job promptly, and a second SIGINT ends it
at once.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from adacomp_mpi.common.log import get_logger

EXIT_STALLED = 69  # EX_UNAVAILABLE: a peer is unreachable or dead; no checkpoint possible
POLL_SECONDS = 0.5
GRACE_SECONDS = 10.0  # after a signal, how long a blocked rank may go without progress
FORWARD_SECONDS = 0.3  # between the last log line and MPI_Abort
ABORT_RETURN_SECONDS = 3.0  # how long MPI_Abort may take before this rank exits itself


def signal_exit_code(signum: int) -> int:
    """The shell's convention for a job ended by a signal: 128 + its number."""
    return 128 + signum


class Heartbeat(Protocol):
    """What the training loop tells the watchdog: it is alive, and where."""

    def beat(self, phase: str, step: int) -> None: ...


class NoHeartbeat:
    """For runs without a watchdog (``--stall-timeout 0`` in tests, library use)."""

    def beat(self, phase: str, step: int) -> None:
        return None


@dataclass
class _Beat:
    phase: str
    step: int
    at: float


class Watchdog:
    """Watches the main thread's beats and the signals that arrive."""

    def __init__(
        self,
        *,
        rank: int,
        timeout: float,
        grace: float,
        abort: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rank, self.timeout, self.grace = rank, timeout, grace
        self._abort, self._clock = abort, clock
        self._beat = _Beat("start-up", 0, clock())
        self._signals: list[tuple[int, float]] = []  # (signal number, when)
        self._stopped = threading.Event()
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_write, False)
        self._thread = threading.Thread(target=self._watch, name="adacomp-watchdog", daemon=True)

    def start(self) -> Watchdog:
        """Start watching; call on the main thread (it owns the wakeup fd)."""
        self._previous_fd = signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)

    def beat(self, phase: str, step: int) -> None:
        """The main thread is alive and about to enter ``phase`` of ``step``."""
        self._beat = _Beat(phase, step, self._clock())

    # -- the watching thread --------------------------------------------------

    def _watch(self) -> None:
        while not self._stopped.is_set():
            ready, _, _ = select.select([self._wakeup_read], [], [], POLL_SECONDS)
            if ready:
                self._read_signals()
            if (verdict := self.check()) is not None:
                message, code = verdict
                get_logger().error("%s", message)
                # Give the launcher's proxy a moment to forward that line: an
                # abort right away can end the job with it still in the pipe.
                time.sleep(FORWARD_SECONDS)
                self._abort(code)
                # On a host cut off from mpiexec, MPI_Abort returns: hydra's
                # proxy there cannot reach the launcher. End this rank anyway.
                time.sleep(ABORT_RETURN_SECONDS)
                os._exit(code)

    def _read_signals(self) -> None:
        try:
            data = os.read(self._wakeup_read, 64)
        except BlockingIOError:
            return
        now = self._clock()
        self._signals += [(signum, now) for signum in data]

    def check(self) -> tuple[str, int] | None:
        """(one-line message, exit code) when the job must end now, else None."""
        now, beat = self._clock(), self._beat
        where = f"in {beat.phase} at step {beat.step}"
        interrupts = [s for s in self._signals if s[0] == signal.SIGINT]
        if len(interrupts) >= 2:
            return (
                f"rank {self.rank}: second SIGINT {where}: ending every rank now, "
                "without a checkpoint (the last one stays)",
                signal_exit_code(signal.SIGINT),
            )
        if self._signals:
            signum, when = self._signals[0]
            if now - max(when, beat.at) > self.grace:
                name = signal.Signals(signum).name
                return (
                    f"rank {self.rank}: {name}, then no progress for {self.grace:.0f} s "
                    f"({where}): ending every rank without a checkpoint (the last one stays)",
                    signal_exit_code(signum),
                )
        if self.timeout > 0 and now - beat.at > self.timeout:
            return (
                f"rank {self.rank}: no progress for {self.timeout:.0f} s {where}: "
                "a peer is unreachable or dead; aborting the job (resume with --resume auto)",
                EXIT_STALLED,
            )
        return None
