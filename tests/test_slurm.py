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
import re
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

from adacomp_mpi.report.runs import read_records

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


def _submit(cluster: Cluster, script: Path, workdir: Path, exports: dict[str, str]) -> str:
    """sbatch ``script`` on one node with 4 tasks; returns the job id."""
    export = ",".join(["ALL", *(f"{k}={v}" for k, v in exports.items())])
    sub = run(
        [
            "sbatch",
            "--parsable",
            "--nodes=1",
            "--ntasks=4",
            "--ntasks-per-node=4",
            "--time=5",
            f"--export={export}",
            str(script),
        ],
        env=cluster.env,
        cwd=workdir,
        timeout=30,
    )
    job_id = sub.stdout.strip().split(";")[0]
    assert job_id.isdigit(), sub.stdout
    return job_id


def _submit_and_wait(cluster: Cluster, workdir: Path, exports: dict[str, str]) -> tuple[str, float]:
    t0 = time.monotonic()
    job_id = _submit(cluster, CPU_SBATCH, workdir, exports)

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


REQUEUE_SBATCH = SCRIPTS / "slurm" / "requeue.sbatch"
REQUEUE_SETTLE_S = 5  # seconds between the requeue and forcing the restart
REQUEUE_EPOCHS = 10  # x 23 steps with 4 ranks: about 10 s of training on an idle 2-core machine
REQUEUE_TIMEOUT_S = 180  # the whole test, cluster start-up aside
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")


def _job(cluster: Cluster, job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, Reason, Restarts, ...)."""
    show = run(["scontrol", "-o", "show", "job", job_id], env=cluster.env, timeout=15, check=False)
    return dict(f.split("=", 1) for f in show.stdout.split() if "=" in f)


def _step_files(cluster: Cluster, job_id: str) -> list[str]:
    """What slurmd's spool directory still holds for the job's steps (sockets,
    step files): empty once every slurmstepd of the job has finished."""
    pattern = re.compile(rf"(^|[._]){job_id}\.|^job0*{job_id}$")
    spool = cluster.root / "spool"
    return sorted(p.name for p in spool.iterdir() if pattern.search(p.name))


@pytest.mark.timeout(200)
def test_requeue_sbatch_checkpoints_requeues_and_resumes(cluster: Cluster, tmp_path: Path):
    """scripts/slurm/requeue.sbatch: SIGUSR1 to the ranks -> checkpoint, exit 75,
    scontrol requeue; the job runs again under the same id, resumes and completes
    with the same number of steps as an uninterrupted run."""
    t0 = time.monotonic()
    deadline = t0 + REQUEUE_TIMEOUT_S
    exports = {
        "ADACOMP_VENV": str(VENV),
        "ADACOMP_LAUNCHER": "srun",
        "ADACOMP_EPOCHS": str(REQUEUE_EPOCHS),
        "ADACOMP_CHECKPOINT_EVERY": "1epoch",
    }
    job_id = _submit(cluster, REQUEUE_SBATCH, tmp_path, exports)
    out_file = tmp_path / f"adacomp-{job_id}.out"
    run_dir = tmp_path / "runs" / job_id
    metrics = run_dir / "metrics.jsonl"

    def give_up(message: str) -> None:
        run(["scancel", job_id], env=cluster.env, timeout=15, check=False)
        pytest.fail(
            f"job {job_id}: {message} after {time.monotonic() - t0:.0f}s\n"
            f"scontrol: {_job(cluster, job_id)}\n--- job output\n{tail(out_file)}\n{cluster.logs()}"
        )

    # 1. Training is under way: some steps in metrics.jsonl.
    while not any(r.get("type") == "step" and r["step"] >= 3 for r in read_records(metrics)):
        if _job(cluster, job_id).get("JobState") in ENDED:
            give_up("ended before it was signalled")
        if time.monotonic() > deadline:
            give_up("no training steps")
        time.sleep(0.5)
    t_signal = time.monotonic()

    # 2. SIGUSR1 to every task of the job's steps, as --signal=USR1@120 sends it
    # before the time limit. Neither --batch nor --full: those would signal the
    # batch shell (only it, or it as well), and bash dies of SIGUSR1.
    run(["scancel", "--signal=USR1", job_id], env=cluster.env, timeout=15)

    # 3. The trainer checkpoints and exits 75, the script requeues the job.
    # Slurm holds a requeued job back (Reason=BeginTime, about 2 min ahead); start
    # it now, but only once the first run's step daemons are gone: the new run's
    # step has the same id (<job>.0) on the same node, and an old slurmstepd
    # cleaning up late removes the new one's PMI-2 socket (seen: "mpi/pmi2:
    # failed to send temp kvs", the step killed at MPI_Finalize). Wait a few
    # seconds more: once, after other jobs on the same cluster, a restart forced
    # within a second of the requeue ended FAILED before its script printed
    # anything (likely slurmd still holding the first run's revoked credential).
    t_requeued = None
    started_now = False
    while True:
        job = _job(cluster, job_id)
        state, reason = job.get("JobState", ""), job.get("Reason", "")
        if t_requeued is None and int(job.get("Restarts", "0")) >= 1:
            t_requeued = time.monotonic()
        if (
            t_requeued is not None
            and state == "PENDING"
            and not started_now
            and not _step_files(cluster, job_id)
            and time.monotonic() - t_requeued >= REQUEUE_SETTLE_S
        ):
            if reason == "BeginTime":
                run(
                    ["scontrol", "update", f"jobid={job_id}", "StartTime=now"],
                    env=cluster.env,
                    timeout=15,
                )
                started_now = True
            elif reason.startswith("JobHeld"):
                run(["scontrol", "release", job_id], env=cluster.env, timeout=15)
                started_now = True
        if state in ENDED:
            break
        if time.monotonic() > deadline:
            give_up(f"still {state} ({reason}), requeued: {t_requeued is not None}")
        time.sleep(0.5)
    t_end = time.monotonic()

    log = out_file.read_text(errors="replace")
    assert t_requeued is not None and job.get("Restarts") == "1", (
        f"job {job_id} was not requeued once: {job}\n--- job output\n{tail(out_file)}"
    )
    assert state == "COMPLETED", f"job {job_id} ended {state}\n--- job output\n{tail(out_file)}"
    # --open-mode=append: the log holds both runs.
    assert "preempted (" in log, tail(out_file)
    assert f"requeueing job {job_id}" in log, tail(out_file)
    assert "resumed from" in log, tail(out_file)

    summary = _check_summary(run_dir / "summary.json", out_file)
    records = read_records(metrics)
    first_epoch = next(r for r in records if r.get("type") == "epoch" and r["epoch"] == 0)
    steps_per_epoch = first_epoch["step"]
    assert summary["steps"] == REQUEUE_EPOCHS * steps_per_epoch
    # Every step recorded exactly once across the two runs.
    steps = sorted(r["step"] for r in records if r.get("type") == "step")
    assert steps == list(range(1, summary["steps"] + 1))
    print(
        f"SLURM requeue job {job_id}: signalled at {t_signal - t0:.1f}s, requeued "
        f"{t_requeued - t_signal:.1f}s later, completed at {t_end - t0:.1f}s; "
        f"steps {summary['steps']} ({REQUEUE_EPOCHS} x {steps_per_epoch}), "
        f"accuracy {summary['test_accuracy']:.3f}"
    )
