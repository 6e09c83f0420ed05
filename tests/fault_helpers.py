"""Background MPI jobs for the fault suite: start, watch files, signal, kill, clean up.

Hydra puts every proxy and rank in its own session, so killing mpiexec's
process group does not reach the ranks; :meth:`Job.kill_all` kills the whole
process tree it saw instead. Every wait polls with a deadline: nothing sleeps
for a fixed time and nothing can hang.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from mpi_util import mpiexec

from adacomp_mpi.report.runs import read_records

T = TypeVar("T")
POLL_SECONDS = 0.05
RANKS_LINE = re.compile(r"ranks: (\d+=pid \d+@\S+(?:, \d+=pid \d+@\S+)*)\n")
RANK_ENTRY = re.compile(r"(\d+)=pid (\d+)@")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents first."""
    result, frontier = [], [pid]
    while frontier:
        below = [child for parent in frontier for child in children(parent)]
        result += below
        frontier = below
    return result


def parse_rank_pids(text: str) -> dict[int, int]:
    """{rank: pid} from the trainer's ``ranks: 0=pid N@host, ...`` log line (once complete)."""
    match = RANKS_LINE.search(text)
    if match is None:
        return {}
    return {int(rank): int(pid) for rank, pid in RANK_ENTRY.findall(match.group(1))}


def step_records(metrics: Path) -> list[dict]:
    """The complete ``type: step`` lines of a metrics.jsonl written so far."""
    return [r for r in read_records(metrics) if r.get("type") == "step"]


@dataclass
class Job:
    """``mpiexec -n N ...`` running in the background, output going to files."""

    command: list[str]
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    seen: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"

    def note_tree(self) -> None:
        """Remember every process below mpiexec, to kill them later if need be."""
        if pid_alive(self.pid):
            self.seen.update(descendants(self.pid))

    def wait_until(self, predicate: Callable[[], T], *, timeout: float, what: str) -> T:
        """Poll ``predicate`` until truthy; fail if the deadline passes or the job ends."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(
                    f"job exited ({self.process.returncode}) before {what}\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.kill_all()
                pytest.fail(f"no {what} within {timeout} s\n{self.output()}")
            self.note_tree()
            time.sleep(POLL_SECONDS)

    def rank_pids(self, *, timeout: float = 120) -> dict[int, int]:
        """Wait for the ``ranks:`` line on rank 0's stdout and parse it."""
        return self.wait_until(
            lambda: parse_rank_pids(self.stdout()), timeout=timeout, what="'ranks:' log line"
        )

    def finish(self, *, timeout: float) -> tuple[int, float]:
        """(exit code, monotonic time it was seen to exit); kills and fails past ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.kill_all()
                pytest.fail(f"job still running {timeout} s later: {self.command}\n{self.output()}")
            self.note_tree()
            time.sleep(POLL_SECONDS)
        return self.process.returncode, time.monotonic()

    def kill_all(self) -> None:
        """SIGKILL mpiexec and every process ever seen below it."""
        self.note_tree()
        for pid in [*sorted(self.seen), self.pid]:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def start_job(
    ranks: int,
    args: list[str],
    *,
    cwd: Path,
    name: str = "job",
    env: dict[str, str] | None = None,
) -> Job:
    """Launch ``mpiexec -n ranks args`` in the background; output to cwd/NAME.stdout|stderr."""
    command = [mpiexec(), "-n", str(ranks), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return launch(command, cwd=cwd, name=name, env=full_env)


def launch(command: list[str], *, cwd: Path, name: str, env: dict[str, str]) -> Job:
    """Run ``command`` in the background in its own session; output to cwd/NAME.stdout|stderr."""
    stdout_path, stderr_path = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    return Job(command, process, stdout_path, stderr_path)


def wait_for_steps(job: Job, out: Path, count: int, *, timeout: float) -> None:
    """Wait until rank 0 has written ``count`` step records to metrics.jsonl."""
    metrics = out / "metrics.jsonl"
    job.wait_until(
        lambda: len(step_records(metrics)) >= count,
        timeout=timeout,
        what=f"{count} steps in {metrics}",
    )


def wait_gone(pids: list[int], *, deadline: float) -> list[int]:
    """Poll until none of ``pids`` is alive or ``deadline`` (monotonic) passes; the survivors."""
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(POLL_SECONDS)


def error_lines(stderr: str) -> list[str]:
    """The ``adacomp-train: error: ...`` lines of a job's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("adacomp-train: error: ")]
