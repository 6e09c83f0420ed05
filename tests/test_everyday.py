"""Everyday use: readable progress under mpiexec, TensorBoard scalars, output
file modes, reruns into a finished run's directory, and --standardize."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mpi_util import run_mpi, train_command

from adacomp_mpi.common.files import atomic_write_bytes
from adacomp_mpi.train import progress

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
RUN_TIMEOUT = 120  # one small run, started as one process or under mpiexec
LINE = re.compile(
    r"^\[0/2\] epoch \d+/2 step \d+/\d+  loss \d+\.\d+  \d+ samples/s  ratio \S+  "
    r"elapsed (\d+ min )?\d+ s  eta (\d+ min )?\d+ s$"
)


def _train(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    """One rank, no mpiexec (MPI starts as a singleton)."""
    return subprocess.run(
        [*train_command(), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A two-rank run with checkpoints (and TensorBoard if installed), under umask 022."""
    out = tmp_path_factory.mktemp("everyday")
    args = ["--epochs", "2", "--output-dir", str(out / "run"), "--checkpoint-every", "1epoch"]
    if HAVE_TENSORBOARD:
        args.append("--tensorboard")
    old = os.umask(0o022)
    try:
        result = run_mpi(2, [*train_command(), *args], cwd=out, timeout=240)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "run", result.stdout


@pytest.mark.mpi
def test_progress_lines_have_elapsed_and_a_whole_run_eta_on_rank_0(two_rank_run) -> None:
    _, stdout = two_rank_run
    lines = [line for line in stdout.splitlines() if " step " in line and " eta " in line]
    assert len(lines) >= 2, stdout  # at least one per epoch
    assert all(LINE.match(line) for line in lines), lines
    assert not any(line.startswith("[1/2]") for line in stdout.splitlines())
    assert "\r" not in stdout
    ends = [line for line in lines if re.search(r"step (\d+)/\1 ", line)]
    assert [line.split()[2] for line in ends] == ["1/2", "2/2"]  # one at each epoch's end
    assert ends[-1].endswith("eta 0 s")


@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_TENSORBOARD, reason="the tensorboard package is not installed")
def test_tensorboard_scalars_are_readable(two_rank_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = two_rank_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "compression/ratio", "throughput/samples_per_s"} <= tags
    assert {"test/loss", "test/accuracy"} <= tags
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(events.Scalars("train/loss")) == summary["steps"]
    accuracy = events.Scalars("test/accuracy")
    assert [e.step for e in accuracy] == [summary["steps"] // 2, summary["steps"]]
    assert accuracy[-1].value == pytest.approx(summary["test_accuracy"], abs=1e-6)


@pytest.mark.mpi
def test_outputs_are_group_readable_under_umask_022(two_rank_run) -> None:
    run_dir, _ = two_rank_run
    files = [run_dir / n for n in ("metrics.jsonl", "config.json", "summary.json", "model.pt")]
    files += [p for p in (run_dir / "checkpoints").rglob("*") if p.is_file()]
    assert len(files) > 4
    assert {str(p): oct(_mode(p)) for p in files} == {str(p): "0o644" for p in files}


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "f") == 0o640


def test_whole_run_eta_counts_every_remaining_step(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    clock = progress.RunClock(total_steps=100, start_step=20)  # resumed at step 20
    for _ in range(10):
        now[0] += 0.5
        clock.tick()
    assert clock.eta() == pytest.approx(0.5 * 70)
    assert clock.eta_text() == "35 s"
    assert [progress.duration_text(s) for s in (12, 151, 3900)] == [
        "12 s",
        "2 min 31 s",
        "1 h 05 min",
    ]


def test_log_lines_at_most_one_per_interval_and_one_per_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now, lines = [0.0], []
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(progress, "get_logger", lambda: _Recorder(lines))
    log = progress.LogProgress(2, progress.RunClock(total_steps=200), interval=10.0)
    for epoch in range(2):
        log.start_epoch(epoch, total=100)
        for _ in range(100):
            now[0] += 0.3  # 30 s per epoch
            log.update(loss=1.0, samples_per_s=10.0, ratio=None)
        log.end_epoch()
    assert 6 <= len(lines) <= 8  # every 10 s, plus each epoch's end
    assert any("epoch 1/2 step 100/100" in line for line in lines)
    assert "elapsed 10 s  eta 50 s" in lines[0]  # the whole run's remaining 167 steps
    assert lines[-1].endswith("elapsed 1 min 00 s  eta 0 s")


class _Recorder:
    def __init__(self, lines: list[str]) -> None:
        self.lines, self.handlers = lines, []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args)


@pytest.mark.mpi
def test_rerun_into_a_finished_run_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _train(["--epochs", "1", "--output-dir", str(out), "--checkpoint-every", "1"], tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    refused = _train(["--epochs", "2", "--output-dir", str(out)], tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    error = refused.stderr.strip().splitlines()
    assert len(error) == 1 and "already holds a finished run" in error[0], refused.stderr
    assert "--overwrite" in error[0] and "--resume" in error[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing touched
    again = _train(["--epochs", "2", "--output-dir", str(out), "--overwrite"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (out / "checkpoints").exists()  # the old run's checkpoints were cleared
    assert json.loads((out / "config.json").read_text())["options"]["epochs"] == 2


@pytest.mark.mpi
def test_default_output_is_a_fresh_dir_per_run_linked_from_latest(tmp_path: Path) -> None:
    """The README's quick start, twice; then --resume auto continues runs/latest."""
    runs = tmp_path / "runs"
    made = []
    for _ in range(2):
        result = run_mpi(
            2, [*train_command(), "--epochs", "1", "--checkpoint-every", "1epoch"], cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout + result.stderr
        made.append(os.readlink(runs / "latest"))
        assert json.loads((runs / "latest" / "summary.json").read_text())["result"] == "trained"
    assert made[0] != made[1]
    assert all(re.fullmatch(r"\d{8}-\d{6}(-\d+)?", name) for name in made)
    assert all((runs / name / "summary.json").is_file() for name in made)
    resumed = run_mpi(2, [*train_command(), "--epochs", "2", "--resume", "auto"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"continuing {Path('runs') / 'latest'} -> {Path('runs') / made[1]}" in resumed.stdout
    assert "resumed from" in resumed.stdout
    assert sorted(p.name for p in runs.iterdir()) == sorted([*made, "latest"])
    assert json.loads((runs / made[1] / "summary.json").read_text())["epochs"] == 2
    # an explicit checkpoint continues the run it belongs to, not a fresh directory
    checkpoint = sorted((runs / made[0] / "checkpoints").glob("step-*"))[-1]
    explicit = run_mpi(
        2, [*train_command(), "--epochs", "2", "--resume", str(checkpoint)], cwd=tmp_path
    )
    assert explicit.returncode == 0, explicit.stdout + explicit.stderr
    assert f"continuing in {(runs / made[0]).resolve()}" in explicit.stdout
    assert sorted(p.name for p in runs.iterdir()) == sorted([*made, "latest"])
    assert json.loads((runs / made[0] / "summary.json").read_text())["epochs"] == 2


def test_tensorboard_without_the_package_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "shadow" / "tensorboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named tensorboard')\n")
    env = {"PYTHONPATH": str(fake.parent)}
    result = _train(["--tensorboard", "--output-dir", str(tmp_path / "run")], tmp_path, env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'adacomp-mpi[tensorboard]'" in lines[0], lines
    assert not (tmp_path / "run").exists()


def _tabular(tmp_path: Path) -> tuple[Path, Path]:
    """The digits features in raw ranges (some ~4000), and the same pre-standardised."""
    from adacomp_mpi.datasets import load_dataset
    from adacomp_mpi.datasets.standardize import feature_stats

    digits = load_dataset("digits")
    rng = np.random.default_rng(0)
    scale = rng.uniform(800, 4000, 64).astype(np.float32)
    offset = rng.uniform(0, 2000, 64).astype(np.float32)
    x_train, x_test = (x * scale + offset for x in (digits.x_train, digits.x_test))
    mean, std = feature_stats(x_train)
    files = []
    for name, (train, test) in {
        "raw.npz": (x_train, x_test),
        "pre.npz": ((x_train - mean) / std, (x_test - mean) / std),
    }.items():
        arrays = {"y_train": digits.y_train, "y_test": digits.y_test}
        np.savez(tmp_path / name, x_train=train, x_test=test, **arrays)
        files.append(tmp_path / name)
    return files[0], files[1]


def _accuracy(out: Path) -> float:
    return json.loads((out / "summary.json").read_text())["test_accuracy"]


@pytest.mark.mpi
def test_standardize_trains_raw_features_like_prescaled_ones(tmp_path: Path) -> None:
    import torch

    raw, pre = _tabular(tmp_path)
    common = ["--dataset", "npz", "--epochs", "3"]
    runs = {
        "raw": [*common, "--data-path", str(raw)],
        "std": [*common, "--data-path", str(raw), "--standardize"],
        "pre": [*common, "--data-path", str(pre)],
    }
    results = {
        k: _train([*a, "--output-dir", str(tmp_path / k)], tmp_path) for k, a in runs.items()
    }
    assert results["std"].returncode == 0, results["std"].stdout + results["std"].stderr
    assert results["pre"].returncode == 0, results["pre"].stdout + results["pre"].stderr
    assert results["raw"].returncode in (0, 3)  # raw ranges may diverge: "did not train"
    hint = "hint: the loss is growing; features in raw ranges train poorly — try --standardize"
    assert hint in results["raw"].stdout
    assert hint not in results["std"].stdout + results["pre"].stdout
    assert _accuracy(tmp_path / "raw") < 0.5
    assert _accuracy(tmp_path / "pre") > 0.8
    assert abs(_accuracy(tmp_path / "std") - _accuracy(tmp_path / "pre")) <= 0.02
    config = json.loads((tmp_path / "std" / "config.json").read_text())
    assert config["options"]["standardize"] is True
    model = torch.load(tmp_path / "std" / "model.pt", weights_only=True)
    from adacomp_mpi.datasets.standardize import feature_stats

    mean, std = feature_stats(np.load(raw)["x_train"])
    assert np.allclose(model["feature_mean"].numpy(), mean)
    assert np.allclose(model["feature_std"].numpy(), std)
    assert "feature_mean" not in torch.load(tmp_path / "pre" / "model.pt", weights_only=True)
