"""Shared plumbing for the cluster tests (tests/test_slurm.py, tests/test_multihost.py).

Everything here is bounded: every subprocess has a timeout, and on a timeout
the whole process group it started is killed, so a hung launcher cannot
outlive the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
# The virtualenv running the tests is the one the jobs use.
VENV = Path(sys.prefix)
VENV_BIN = VENV / "bin"


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def find_tool(name: str) -> str | None:
    """A system binary, also looked up in the sbin directories (not always on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def missing_tools(names: list[str]) -> list[str]:
    return [n for n in names if find_tool(n) is None]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without launcher/scheduler state that could leak
    in from an enclosing job (SLURM_*, PMI_*, MPI ranks) or a developer's
    ADACOMP_* settings; plus sbin on PATH and `extra`."""
    drop = ("SLURM_", "SRUN_", "SBATCH_", "SALLOC_", "PMI_", "PMIX_", "OMPI_", "HYDRA_", "ADACOMP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    path = env.get("PATH", "")
    env["PATH"] = ":".join([str(VENV_BIN), path, "/usr/local/sbin", "/usr/sbin", "/sbin"])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def run(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in its own session; on timeout kill the session's process group."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(
            f"timed out after {timeout:.0f}s: {' '.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}"
        ) from None
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}: {' '.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}"
        )
    return result


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return text[-limit:]
