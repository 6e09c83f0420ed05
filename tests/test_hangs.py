"""Never hang, never report a failed run as a success: Ctrl-C, a rank that stops
answering (SIGSTOP: the same, for its peers, as a host cut off the network),
a signal during such a stall, a diverged run, a misspelt setting.

Real jobs under mpiexec, each with a hard deadline; plus the watchdog's rules
in-process with a fake clock.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from fault_helpers import (
    Job,
    error_lines,
    start_job,
    wait_for_steps,
)
from mpi_util import run_mpi, train_command

from adacomp_mpi.dist.watchdog import EXIT_STALLED, Watchdog

RANKS = 2
STARTUP = 150.0
LONG_RUN = ["--epochs", "500"]
WATCHDOG_LINE = re.compile(
    r"rank 0: no progress for 5 s in (allgatherv|metrics allreduce) at step \d+: "
    r"a peer is unreachable or dead"
)


def _args(out: Path, *extra: str) -> list[str]:
    return [*train_command(), "--output-dir", str(out), *extra]


def _wait_for_steps(job: Job, out: Path, count: int) -> None:
    wait_for_steps(job, out, count, timeout=STARTUP)


def _stop_rank(job: Job, rank: int) -> int:
    pid = job.rank_pids()[rank]
    os.kill(pid, signal.SIGSTOP)
    return pid


@pytest.mark.fault
@pytest.mark.timeout(300)
def test_ctrl_c_checkpoints_and_ends_every_rank_within_15_s(
    tmp_path: Path, jobs: list[Job]
) -> None:
    out = tmp_path / "run"
    job = start_job(RANKS, _args(out, *LONG_RUN), cwd=tmp_path)
    jobs.append(job)
    _wait_for_steps(job, out, 3)
    pids = job.rank_pids()
    job.process.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal does to mpiexec
    signalled = time.monotonic()
    code, ended = job.finish(timeout=30)
    assert ended - signalled < 15, job.output()
    assert code == 130, job.output()
    [line] = error_lines(job.stderr())
    match = re.fullmatch(
        r"adacomp-train: error: interrupted \(SIGINT\) at step (\d+); "
        r"checkpoint written, rerun with --resume auto",
        line,
    )
    assert match, line
    assert (out / "checkpoints" / f"step-{int(match.group(1)):08d}" / "manifest.json").exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids.values())


@pytest.mark.fault
@pytest.mark.timeout(420)
def test_a_rank_that_stops_answering_ends_the_job_and_resume_finishes(
    tmp_path: Path, jobs: list[Job]
) -> None:
    out = tmp_path / "run"
    args = ["--epochs", "3", "--checkpoint-every", "20"]
    job = start_job(RANKS, _args(out, *args, "--stall-timeout", "5"), cwd=tmp_path)
    jobs.append(job)
    _wait_for_steps(job, out, 25)
    _stop_rank(job, 1)
    stopped = time.monotonic()
    code, ended = job.finish(timeout=60)
    assert ended - stopped < 30, job.output()
    assert code == EXIT_STALLED, job.output()
    assert WATCHDOG_LINE.search(job.stdout() + job.stderr()), job.output()
    result = run_mpi(RANKS, _args(out, *args, "--resume", "auto"), cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from" in result.stdout


@pytest.mark.fault
@pytest.mark.timeout(300)
def test_sigterm_during_a_stall_ends_the_job_within_30_s(tmp_path: Path, jobs: list[Job]) -> None:
    out = tmp_path / "run"
    job = start_job(RANKS, _args(out, *LONG_RUN, "--stall-timeout", "0"), cwd=tmp_path)
    jobs.append(job)
    _wait_for_steps(job, out, 3)
    _stop_rank(job, 1)
    time.sleep(1)  # rank 0 is now blocked in a collective
    job.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code, ended = job.finish(timeout=60)
    assert ended - signalled < 30, job.output()
    assert code != 0
    assert "SIGTERM, then no progress for 10 s" in job.stdout() + job.stderr(), job.output()


@pytest.mark.timeout(200)
def test_a_diverged_run_exits_3_with_one_line(tmp_path: Path) -> None:
    result = run_mpi(RANKS, _args(tmp_path, "--epochs", "1", "--lr", "1000"), cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith("adacomp-train: error: the run did not train: "), line
    warnings = [x for x in result.stdout.splitlines() if "step skipped" in x]
    assert warnings and all(x.startswith("[0/2]") for x in warnings)


@pytest.mark.timeout(200)
def test_a_bin_size_key_that_names_nothing_is_refused(tmp_path: Path) -> None:
    result = run_mpi(RANKS, _args(tmp_path, "--bin-size", "linear=100"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = error_lines(result.stderr)
    assert "'linear' name neither a layer kind (conv, fc, recurrent" in line
    assert "nor a parameter of this model (1.weight, 1.bias" in line


# -- the watchdog's rules, in-process ------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _watchdog(clock: FakeClock, *, timeout: float = 30, grace: float = 10) -> Watchdog:
    return Watchdog(rank=1, timeout=timeout, grace=grace, abort=lambda code: None, clock=clock)


def test_beats_keep_the_watchdog_quiet_and_silence_trips_it() -> None:
    clock = FakeClock()
    dog = _watchdog(clock)
    for step in range(10):
        clock.now += 20
        dog.beat("allgatherv", step)
        assert dog.check() is None
    clock.now += 31
    message, code = dog.check()
    assert code == EXIT_STALLED
    assert message.startswith("rank 1: no progress for 30 s in allgatherv at step 9")


def test_a_zero_timeout_never_trips() -> None:
    clock = FakeClock()
    dog = _watchdog(clock, timeout=0)
    clock.now += 10_000
    assert dog.check() is None


def test_a_signal_without_progress_ends_after_the_grace_period() -> None:
    clock = FakeClock()
    dog = _watchdog(clock)
    dog._signals.append((signal.SIGTERM, clock.now))
    clock.now += 9
    assert dog.check() is None
    dog.beat("checkpoint", 5)  # progress after the signal restarts the grace period
    clock.now += 9
    assert dog.check() is None
    clock.now += 2
    message, code = dog.check()
    assert code == 128 + signal.SIGTERM
    assert "SIGTERM, then no progress for 10 s (in checkpoint at step 5)" in message


def test_a_second_sigint_ends_the_job_at_once() -> None:
    clock = FakeClock()
    dog = _watchdog(clock)
    dog._signals += [(signal.SIGINT, clock.now), (signal.SIGINT, clock.now)]
    message, code = dog.check()
    assert code == 130
    assert "second SIGINT" in message


def test_signals_reach_the_watchdog_thread_through_the_wakeup_fd() -> None:
    """The C-level handler writes the signal number even when the main thread
    is busy; the watchdog thread reads it."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    clock = FakeClock()
    dog = _watchdog(clock).start()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not dog._signals and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [s for s, _ in dog._signals] == [signal.SIGUSR1]
    finally:
        dog.stop()
        signal.signal(signal.SIGUSR1, previous)
