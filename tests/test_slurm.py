"""The shipped SLURM batch script on a real single-node SLURM cluster.

Starts munged, slurmctld and slurmd from nothing with
scripts/slurm/local_cluster.sh (config, state, munge key and logs in a scratch
directory; free ports; the node is this machine with 4 CPUs), submits
scripts/slurm/cpu.sbatch with sbatch, and checks the summary the job wrote.
The daemons are stopped by PID afterwards, also when a test fails.

Needs root and the Debian packages slurmd slurmctld slurm-client munge
(scripts/ci/install_cluster_deps.sh); skips otherwise.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from cluster_helpers import (
    SCRIPTS,
    VENV,
    VENV_BIN,
    clean_env,
    is_root,
    kill_pid,
    missing_tools,
    run,
    tail,
)

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

SLURM_TOOLS = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo"]
LOCAL_CLUSTER = SCRIPTS / "slurm" / "local_cluster.sh"
CPU_SBATCH = SCRIPTS / "slurm" / "cpu.sbatch"
JOB_TIMEOUT_S = 150


def _skip_reason() -> str | None:
    if not is_root():
        return "needs root to start munged/slurmctld/slurmd"
    missing = missing_tools([*SLURM_TOOLS, "runuser", "ss"])
    if missing:
        return (
            f"SLURM binaries missing: {', '.join(missing)} "
            "(install with scripts/ci/install_cluster_deps.sh)"
        )
    if not (VENV_BIN / "adacomp-train").exists():
        return f"adacomp-train not installed in {VENV}"
    return None


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = clean_env(SLURM_CONF=str(root / "slurm.conf"))

    def logs(self) -> str:
        parts = [
            f"--- {name}\n{tail(self.root / name)}"
            for name in ("slurmctld.log", "slurmd.log", "munge/munged.log")
        ]
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel leftover jobs, then stop the daemons by PID (script first, then by hand)."""
        if (self.root / "slurmctld.pid").exists():
            run(["scancel", "--full", "-u", "root"], env=self.env, timeout=15, check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                q = run(["squeue", "-h", "-o", "%i"], env=self.env, timeout=10, check=False)
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        run([str(LOCAL_CLUSTER), "stop", str(self.root)], env=self.env, timeout=60, check=False)
        for name in ("slurmd.pid", "slurmctld.pid", "munged.pid", "munge/munged.pid"):
            pid_file = self.root / name
            if pid_file.exists():
                pid = pid_file.read_text().strip()
                if pid.isdigit():
                    kill_pid(int(pid))


@pytest.fixture(scope="module")
def cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # Not pytest's tmp_path: its parents are private to root, and munged (running
    # as user munge) must be able to reach its socket inside this directory.
    root = Path(tempfile.mkdtemp(prefix="adacomp-slurm-", dir="/tmp"))
    c = Cluster(root)
    ok = False
    try:
        t0 = time.monotonic()
        start = run(
            [str(LOCAL_CLUSTER), "start", str(root)],
            env=clean_env(LOCAL_SLURM_CPUS="4", LOCAL_SLURM_TIMEOUT="60"),
            timeout=90,
            check=False,
        )
        assert start.returncode == 0, (
            f"local cluster did not start:\n{start.stdout}\n{start.stderr}\n{c.logs()}"
        )
        print(f"SLURM cluster up in {time.monotonic() - t0:.1f}s ({root})")
        yield c
        ok = True
    finally:
        c.stop()
        if ok:
            shutil.rmtree(root, ignore_errors=True)


def _submit_and_wait(cluster: Cluster, workdir: Path, exports: dict[str, str]) -> tuple[str, float]:
    export = ",".join(["ALL", *(f"{k}={v}" for k, v in exports.items())])
    t0 = time.monotonic()
    sub = run(
        [
            "sbatch",
            "--parsable",
            "--nodes=1",
            "--ntasks=4",
            "--ntasks-per-node=4",
            "--time=5",
            f"--export={export}",
            str(CPU_SBATCH),
        ],
        env=cluster.env,
        cwd=workdir,
        timeout=30,
    )
    job_id = sub.stdout.strip().split(";")[0]
    assert job_id.isdigit(), sub.stdout

    state = ""
    deadline = t0 + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        show = run(["scontrol", "-o", "show", "job", job_id], env=cluster.env, timeout=15)
        fields = dict(f.split("=", 1) for f in show.stdout.split() if "=" in f)
        state = fields.get("JobState", "")
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", ""):
            break
        time.sleep(1)
    elapsed = time.monotonic() - t0
    out_file = workdir / f"adacomp-{job_id}.out"
    if state not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
        run(["scancel", job_id], env=cluster.env, timeout=15, check=False)
        pytest.fail(
            f"job {job_id} still {state!r} after {JOB_TIMEOUT_S}s\n"
            f"--- job output\n{tail(out_file)}\n{cluster.logs()}"
        )
    assert state == "COMPLETED", (
        f"job {job_id} ended {state}\n--- job output\n{tail(out_file)}\n{cluster.logs()}"
    )
    return job_id, elapsed


def _check_summary(path: Path, job_out: Path) -> dict:
    assert path.is_file(), f"no summary at {path}\n--- job output\n{tail(job_out)}"
    summary = json.loads(path.read_text())
    assert summary["world_size"] == 4
    assert summary["params_identical"] is True
    assert len(summary["hostnames"]) == 4
    return summary


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_cpu_sbatch_runs_adacomp_on_slurm(cluster: Cluster, tmp_path: Path, launcher: str):
    """sbatch scripts/slurm/cpu.sbatch: 4 ranks on one node, knobs via --export."""
    epochs = "2" if launcher == "srun" else "1"
    job_id, elapsed = _submit_and_wait(
        cluster,
        tmp_path,
        {
            "ADACOMP_VENV": str(VENV),
            "ADACOMP_LAUNCHER": launcher,
            "ADACOMP_EPOCHS": epochs,
            "ADACOMP_COMPRESSION": "adacomp",
        },
    )
    # Default output location of the script: $SLURM_SUBMIT_DIR/runs/$SLURM_JOB_ID.
    summary = _check_summary(
        tmp_path / "runs" / job_id / "summary.json", tmp_path / f"adacomp-{job_id}.out"
    )
    assert summary["compression"] == "adacomp"
    assert summary["compression_ratio"] > 1
    print(
        f"SLURM job {job_id} ({launcher}, {epochs} epochs): {elapsed:.1f}s, "
        f"steps {summary['steps']}, ratio {summary['compression_ratio']:.1f}, "
        f"accuracy {summary['test_accuracy']:.3f}"
    )
