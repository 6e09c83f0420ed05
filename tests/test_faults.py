"""Fault suite: real jobs under mpiexec, real signals, real kills, corrupted files.

Every scenario has a hard time limit (pytest-timeout plus the job's own
deadline) and waits by polling files with deadlines, never by fixed sleeps.
``pytest -m fault`` runs only this suite; the terminal summary counts it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_helpers import (
    Job,
    error_lines,
    parse_rank_pids,
    start_job,
    step_records,
    wait_gone,
)
from fault_helpers import wait_for_steps as wait_for_step_records
from mpi_util import PROGRAMS, run_mpi, train_command

pytestmark = [pytest.mark.mpi, pytest.mark.fault]

REPO = Path(__file__).resolve().parents[1]
RANKS = 3
STEPS_PER_EPOCH = 30  # digits: 1437 // 3 = 479 samples per rank, batches of 16
REFERENCE_EPOCHS = 2
EXIT_DEADLINE = 10.0  # seconds from a fault to the whole job being gone
STARTUP = 150.0  # generous: three torch imports on two busy cores
LONG_RUN = ["--epochs", "500"]


def train_args(out: Path, *extra: str) -> list[str]:
    return [*train_command(), "--output-dir", str(out), *extra]


def summary_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step-*"))


def manifest_of(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def wait_for_steps(job: Job, out: Path, count: int) -> None:
    wait_for_step_records(job, out, count, timeout=STARTUP)


def tree_snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root``: (sha256 or 'dir', mtime_ns)."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        kind = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        snapshot[str(path.relative_to(root))] = (kind, path.stat().st_mtime_ns)
    return snapshot


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-rank run, 2 epochs, checkpoints every 20 steps.

    Started with ``--resume auto`` on an empty output directory, which must
    start fresh. Its checkpoints feed the resume and corruption scenarios.
    """
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "run"
    result = run_mpi(
        RANKS,
        train_args(
            out, "--epochs", str(REFERENCE_EPOCHS), "--checkpoint-every", "20", "--resume", "auto"
        ),
        cwd=tmp,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp / "stdout.txt").write_text(result.stdout)
    return out


# -- 1. resume is bit-identical --------------------------------------------


@pytest.mark.timeout(300)
def test_resume_auto_without_checkpoints_starts_fresh(reference: Path) -> None:
    stdout = (reference.parent / "stdout.txt").read_text()
    assert f"no checkpoint under {reference / 'checkpoints'}: starting fresh" in stdout
    assert "resumed from" not in stdout
    summary = summary_of(reference)
    assert summary["steps"] == REFERENCE_EPOCHS * STEPS_PER_EPOCH
    assert summary["params_identical"] is True
    assert [p.name for p in checkpoints(reference)] == [
        "step-00000020",
        "step-00000040",
        "step-00000060",
    ]


@pytest.mark.timeout(300)
def test_resume_mid_epoch_is_bit_identical(
    reference: Path, tmp_path: Path, record_property: Any
) -> None:
    out = tmp_path / "resumed"
    shutil.copytree(reference / "checkpoints", out / "checkpoints")
    start = out / "checkpoints" / "step-00000020"  # epoch 1, batch 20 of 30
    started = time.monotonic()
    result = run_mpi(
        RANKS,
        train_args(
            out,
            "--epochs",
            str(REFERENCE_EPOCHS),
            "--checkpoint-every",
            "20",
            "--resume",
            str(start),
        ),
        cwd=tmp_path,
        timeout=240,
    )
    record_property("resume_run_s", round(time.monotonic() - started, 1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resumed from {start} at step 20 (epoch 1, batch 20)" in result.stdout
    expected, got = summary_of(reference), summary_of(out)
    assert got["param_digest"] == expected["param_digest"]
    assert got["params_identical"] is True
    assert got["steps"] == expected["steps"]
    assert got["bytes_sent"] == expected["bytes_sent"]
    assert got["dense_bytes"] == expected["dense_bytes"]
    assert got["test_loss"] == expected["test_loss"]
    # Step by step, the resumed session retraces the uninterrupted one exactly.
    before = {r["step"]: r for r in step_records(reference / "metrics.jsonl")}
    after = step_records(out / "metrics.jsonl")
    assert [r["step"] for r in after] == list(range(21, expected["steps"] + 1))
    for record in after:
        assert (record["loss"], record["bytes_sent"]) == (
            before[record["step"]]["loss"],
            before[record["step"]]["bytes_sent"],
        )


# -- 2. preemption signals ---------------------------------------------------


@pytest.mark.timeout(420)
def test_sigterm_to_mpiexec_checkpoints_and_resume_auto_finishes(
    reference: Path, tmp_path: Path, jobs: list[Job], record_property: Any
) -> None:
    out = tmp_path / "run"
    job = start_job(RANKS, train_args(out, *LONG_RUN), cwd=tmp_path)
    jobs.append(job)
    wait_for_steps(job, out, 3)
    job.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code, ended = job.finish(timeout=60)
    record_property("sigterm_to_exit_s", round(ended - signalled, 2))
    assert code == 75, job.output()
    [line] = error_lines(job.stderr())
    match = re.fullmatch(
        r"adacomp-train: error: preempted \(SIGTERM\) at step (\d+); "
        r"checkpoint written, rerun with --resume auto",
        line,
    )
    assert match, line
    step = int(match.group(1))
    [saved] = checkpoints(out)
    assert saved.name == f"step-{step:08d}"
    manifest = manifest_of(saved)
    assert (manifest["step"], manifest["world_size"]) == (step, RANKS)
    assert set(manifest["sha256"]) == {"common.pt", *(f"rank-{r:05d}.pt" for r in range(RANKS))}
    assert step_records(out / "metrics.jsonl")[-1]["step"] == step

    # Resume with the same options; only --epochs may differ (not a trajectory option).
    epochs = max(REFERENCE_EPOCHS, (step - 1) // STEPS_PER_EPOCH + 1)
    result = run_mpi(
        RANKS,
        train_args(out, "--epochs", str(epochs), "--resume", "auto"),
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"resumed from {saved} at step {step}" in result.stdout
    summary = summary_of(out)
    assert summary["params_identical"] is True
    assert summary["steps"] == epochs * STEPS_PER_EPOCH
    assert summary["skipped_steps"] == 0
    if epochs == REFERENCE_EPOCHS:  # the usual case: compare with the uninterrupted run
        assert summary["param_digest"] == summary_of(reference)["param_digest"]
        assert summary["bytes_sent"] == summary_of(reference)["bytes_sent"]


@pytest.mark.timeout(300)
def test_sigusr1_to_one_rank_stops_every_rank_at_the_same_step(
    tmp_path: Path, jobs: list[Job], record_property: Any
) -> None:
    out = tmp_path / "run"
    job = start_job(RANKS, train_args(out, *LONG_RUN, "--log-all-ranks"), cwd=tmp_path)
    jobs.append(job)
    pids = job.rank_pids(timeout=STARTUP)
    assert sorted(pids) == list(range(RANKS))
    wait_for_steps(job, out, 3)
    os.kill(pids[2], signal.SIGUSR1)  # one rank only; the flag travels in the step Allreduce
    signalled = time.monotonic()
    code, ended = job.finish(timeout=60)
    record_property("sigusr1_to_exit_s", round(ended - signalled, 2))
    assert code == 75, job.output()
    [line] = error_lines(job.stderr())
    match = re.search(r"preempted \(signal on another rank\) at step (\d+)", line)
    assert match, line
    step = int(match.group(1))
    stdout = job.stdout()
    for rank in range(RANKS):
        written = re.findall(rf"^\[{rank}/{RANKS}\] checkpoint written: (\S+)$", stdout, re.M)
        assert [Path(p).name for p in written] == [f"step-{step:08d}"], stdout
    [saved] = checkpoints(out)
    assert manifest_of(saved)["step"] == step
    assert wait_gone(list(pids.values()), deadline=time.monotonic() + 5) == []


# -- 3. an exception on one rank -------------------------------------------


@pytest.mark.timeout(300)
def test_exception_on_rank_1_aborts_every_rank_quickly(
    tmp_path: Path, jobs: list[Job], record_property: Any
) -> None:
    stamp = tmp_path / "fault-time"
    program = [sys.executable, str(PROGRAMS / "crash_on_rank.py")]
    injection = ["--rank", "1", "--step", "5", "--stamp", str(stamp), "--"]
    job = start_job(
        RANKS,
        [*program, *injection, "--output-dir", str(tmp_path / "run"), *LONG_RUN],
        cwd=tmp_path,
    )
    jobs.append(job)
    pids = job.rank_pids(timeout=STARTUP)
    code, _ = job.finish(timeout=STARTUP)
    ended = time.time()
    assert stamp.exists(), job.output()
    fault = float(stamp.read_text())
    record_property("exception_to_exit_s", round(ended - fault, 2))
    record_property("exit_code", code)
    assert code != 0, job.output()
    assert ended - fault < EXIT_DEADLINE, job.output()
    remaining = EXIT_DEADLINE - (time.time() - fault)
    assert wait_gone(list(pids.values()), deadline=time.monotonic() + remaining) == []
    stderr = job.stderr()
    assert "[1/3] fatal error:" in stderr, job.output()
    assert "RuntimeError: injected fault on rank 1 at step 5" in stderr, job.output()
    assert re.findall(r"\[(\d+)/3\] fatal error", stderr) == ["1"], job.output()


# -- 4. a rank killed outright ---------------------------------------------


@pytest.mark.timeout(300)
def test_sigkill_of_one_rank_ends_the_job_and_names_it(
    tmp_path: Path, jobs: list[Job], record_property: Any
) -> None:
    out = tmp_path / "run"
    job = start_job(RANKS, train_args(out, *LONG_RUN), cwd=tmp_path)
    jobs.append(job)
    pids = job.rank_pids(timeout=STARTUP)
    wait_for_steps(job, out, 3)
    victim = pids[1]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    code, ended = job.finish(timeout=60)
    record_property("sigkill_to_exit_s", round(ended - killed, 2))
    record_property("exit_code", code)
    assert code != 0, job.output()
    assert ended - killed < EXIT_DEADLINE, job.output()
    assert wait_gone(list(pids.values()), deadline=killed + EXIT_DEADLINE) == []
    output = job.stdout() + job.stderr()
    hydra = re.search(
        r"BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\s+=\s+PID (\d+) RUNNING AT \S+"
        r"\s+=\s+EXIT CODE: 9\b",
        output,
    )
    assert hydra, output
    # The trainer's "ranks:" line maps PIDs to ranks: the killed PID is rank 1's.
    rank_of = {pid: rank for rank, pid in parse_rank_pids(job.stdout()).items()}
    assert rank_of[victim] == 1
    # Hydra names the first rank, in rank order, whose exit status it saw as bad.
    # Its cleanup SIGKILLs the survivors, and when it reaps rank 0 before
    # reporting, it names rank 0 instead (about 1 run in 4 here): the PID it
    # prints is the killed rank's or a lower rank's, never a higher one's.
    named = int(hydra.group(1))
    assert named in rank_of, output
    assert rank_of[named] <= rank_of[victim], output
    record_property("hydra_named_rank", rank_of[named])


# -- 5. non-finite gradients -----------------------------------------------

NPZ_TRAIN, NPZ_TEST, NPZ_FEATURES, NPZ_CLASSES = 300, 90, 64, 5
BAD_SAMPLE = 17
NPZ_EPOCHS, NPZ_BATCH = 2, 16


@pytest.fixture(scope="module")
def poisoned_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gaussian blobs, with one training sample whose features overflow the MLP.

    The npz loader refuses NaN and infinity outright (exit 2), so the fault
    is a finite sample (every feature the largest float32) whose first layer
    overflows to inf (any hidden unit with |sum of weights| > 1 does) and then
    to NaN: a non-finite loss on exactly one rank. Merely huge values (1e38)
    are not enough: they give a finite, enormous gradient that is applied and
    wrecks the model one step later on every rank.
    """
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 2, (NPZ_CLASSES, NPZ_FEATURES))

    def split(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, NPZ_CLASSES, count)
        return (centres[labels] + rng.normal(0, 1, (count, NPZ_FEATURES))).astype(
            np.float32
        ), labels

    x_train, y_train = split(NPZ_TRAIN)
    x_test, y_test = split(NPZ_TEST)
    x_train[BAD_SAMPLE] = np.finfo(np.float32).max
    path = tmp_path_factory.mktemp("npz") / "poisoned.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def poisoned_steps() -> list[tuple[int, int]]:
    """(global step, rank) of every step whose batch holds the bad sample."""
    from adacomp_mpi.train.sharding import epoch_shard

    per_rank = NPZ_TRAIN // RANKS
    steps_per_epoch = -(-per_rank // NPZ_BATCH)
    found = []
    for epoch in range(NPZ_EPOCHS):
        for rank in range(RANKS):
            shard = epoch_shard(NPZ_TRAIN, rank=rank, size=RANKS, seed=0, epoch=epoch)
            if BAD_SAMPLE in shard:
                index = int(np.flatnonzero(shard == BAD_SAMPLE)[0])
                found.append((epoch * steps_per_epoch + index // NPZ_BATCH + 1, rank))
    return found


def npz_args(out: Path, data: Path, policy: str) -> list[str]:
    return train_args(
        out,
        "--dataset",
        "npz",
        "--data-path",
        str(data),
        "--epochs",
        str(NPZ_EPOCHS),
        "--batch-size",
        str(NPZ_BATCH),
        "--on-nonfinite",
        policy,
    )


@pytest.mark.timeout(300)
def test_nonfinite_step_is_skipped_everywhere(poisoned_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_mpi(RANKS, npz_args(out, poisoned_npz, "skip"), cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(out)
    expected = poisoned_steps()
    assert len(expected) == NPZ_EPOCHS  # no remainder dropped: the sample is seen each epoch
    assert summary["skipped_steps"] == len(expected) >= 1
    assert math.isfinite(summary["test_loss"]) and math.isfinite(summary["train_loss"])
    assert summary["params_identical"] is True
    assert summary["test_accuracy"] > 0.5
    warnings = re.findall(
        r"^\[0/3\] step (\d+): non-finite gradient or loss on rank\(s\) \[(\d+)\]; "
        r"step skipped, parameters unchanged$",
        result.stdout,
        re.M,
    )
    assert [(int(s), int(r)) for s, r in warnings] == expected, result.stdout


@pytest.mark.timeout(300)
def test_nonfinite_step_with_stop_policy_checkpoints_finite_state(
    poisoned_npz: Path, tmp_path: Path
) -> None:
    import torch

    out = tmp_path / "run"
    result = run_mpi(RANKS, npz_args(out, poisoned_npz, "stop"), cwd=tmp_path, timeout=240)
    assert result.returncode == 3, result.stdout + result.stderr
    step, rank = poisoned_steps()[0]
    [line] = error_lines(result.stderr)
    assert line == (
        f"adacomp-train: error: step {step}: non-finite gradient or loss on rank(s) [{rank}]; "
        "stopped, last good state checkpointed"
    )
    [saved] = checkpoints(out)
    assert saved.name == f"step-{step:08d}"

    def tensors(value: Any) -> list[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return [value]
        if isinstance(value, dict):
            return [t for v in value.values() for t in tensors(v)]
        if isinstance(value, list | tuple):
            return [t for v in value for t in tensors(v)]
        return []

    common = torch.load(saved / "common.pt", weights_only=True)
    model = tensors(common["model"])
    assert model and all(bool(torch.isfinite(t).all()) for t in model)
    assert all(bool(torch.isfinite(t).all()) for t in tensors(common["optimizer"]))
    for r in range(RANKS):
        state = torch.load(saved / f"rank-{r:05d}.pt", weights_only=True)
        residues = tensors(state["codec"]["residues"])
        assert residues and all(bool(torch.isfinite(t).all()) for t in residues)


# -- 6. the decoder under fuzzing ------------------------------------------


@pytest.mark.timeout(180)
def test_fuzzed_decoder_never_crashes() -> None:
    command = [
        sys.executable,
        str(REPO / "scripts" / "fuzz_decoder.py"),
        "--iterations",
        "3000",
        "--seed",
        "7",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(
        r"iterations 3000 seed 7 .* accepted (\d+) rejected (\d+) crashes (\d+)", result.stdout
    )
    assert match, result.stdout
    accepted, rejected, crashes = map(int, match.groups())
    assert crashes == 0
    assert accepted + rejected == 3000
    assert rejected > 0


# -- 7. corrupted or foreign checkpoints -----------------------------------


class Evil:
    """Unpickles into a shell command: what weights-only loading must refuse."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.sentinel}",))


def _rewrite_manifest(path: Path, **changes: Any) -> None:
    manifest = manifest_of(path)
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _flip_rank_file(path: Path, sentinel: Path) -> None:
    target = path / "rank-00001.pt"
    data = bytearray(target.read_bytes())
    for offset in (len(data) // 3, len(data) // 2, len(data) - 10):
        data[offset] ^= 0xFF
    target.write_bytes(bytes(data))


def _malicious_common(path: Path, sentinel: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save({"model": Evil(sentinel), "position": {"step": 40}}, buffer)
    data = buffer.getvalue()
    (path / "common.pt").write_bytes(data)
    digests = manifest_of(path)["sha256"]
    _rewrite_manifest(path, sha256={**digests, "common.pt": hashlib.sha256(data).hexdigest()})


def _other_format(path: Path, sentinel: Path) -> None:
    _rewrite_manifest(path, format_version=99)


CORRUPTIONS = {
    "flipped bytes in rank-00001.pt": (
        _flip_rank_file,
        RANKS,
        "rank-00001.pt is corrupted (checksum mismatch)",
    ),
    "malicious pickle with matching checksum": (
        _malicious_common,
        RANKS,
        "common.pt cannot be loaded safely",
    ),
    "other format_version": (
        _other_format,
        RANKS,
        "format version 99, this adacomp-train reads only version 2",
    ),
    "3-rank checkpoint resumed with 2": (
        lambda path, sentinel: None,
        2,
        "was written by 3 ranks; resume it with exactly that many (this job has 2)",
    ),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_bad_checkpoint_is_refused_in_one_line_and_left_untouched(
    case: str, reference: Path, tmp_path: Path
) -> None:
    corrupt, ranks, message = CORRUPTIONS[case]
    out = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", out / "checkpoints")
    target = out / "checkpoints" / "step-00000040"
    sentinel = tmp_path / "SENTINEL"
    corrupt(target, sentinel)
    before = tree_snapshot(out / "checkpoints")
    result = run_mpi(
        ranks,
        train_args(out, "--epochs", "2", "--checkpoint-every", "20", "--resume", str(target)),
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"adacomp-train: error: checkpoint {target}")
    assert message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not sentinel.exists()
    assert tree_snapshot(out / "checkpoints") == before
