"""End to end: the real ``adacomp-train`` under mpiexec, and its input validation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from mpi_util import run_mpi, train_command

pytestmark = pytest.mark.mpi

SUMMARY_KEYS = {
    "world_size",
    "compression",
    "model",
    "dataset",
    "epochs",
    "steps",
    "test_accuracy",
    "test_loss",
    "compression_ratio",
    "bits_per_sent_element",
    "bytes_sent",
    "dense_bytes",
    "wall_seconds",
    "params_identical",
}


def train(ranks: int, tmp_path: Path, *args: str, timeout: float = 240):
    summary = tmp_path / "summary.json"
    result = run_mpi(
        ranks,
        [*train_command(), "--output-dir", str(tmp_path / "run"), "--summary", str(summary), *args],
        timeout=timeout,
        cwd=tmp_path,
    )
    return result, summary


@pytest.mark.parametrize("ranks", [2, 3])
def test_training_writes_an_honest_summary(ranks: int, tmp_path: Path) -> None:
    result, path = train(ranks, tmp_path, "--epochs", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(path.read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["world_size"] == ranks
    assert summary["params_identical"] is True
    assert summary["compression"] == "adacomp"
    assert summary["steps"] == 3 * -(-(1437 // ranks) // 16)
    assert summary["dense_bytes"] == 4 * summary["parameters"] * summary["steps"] * ranks
    assert summary["compression_ratio"] == pytest.approx(
        summary["dense_bytes"] / summary["bytes_sent"]
    )
    assert summary["compression_ratio"] > 20
    assert 1 < summary["bits_per_sent_element"] < 12
    assert summary["test_accuracy"] > 0.5
    assert "done: test accuracy" in result.stdout


def test_dense_mode_and_environment_variables(tmp_path: Path) -> None:
    summary_path = tmp_path / "dense.json"
    result = run_mpi(
        2,
        train_command(),
        cwd=tmp_path,
        env={
            "ADACOMP_COMPRESSION": "none",
            "ADACOMP_EPOCHS": "2",
            "ADACOMP_SUMMARY": str(summary_path),
            "ADACOMP_OUTPUT_DIR": str(tmp_path / "dense"),
        },
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["compression"] == "none"
    assert summary["epochs"] == 2
    assert summary["compression_ratio"] == pytest.approx(1.0)
    assert summary["params_identical"] is True


def _write_garbage_digits(path: Path) -> Path:
    with gzip.open(path, "wt") as handle:
        handle.write("1,2,3\n4,5,6\n")
    return path


def _file_in_the_way(tmp_path: Path) -> Path:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    return blocker / "run"


BAD_INPUTS = {
    "negative epochs": lambda tmp: ["--epochs", "-1"],
    "bin size below 2": lambda tmp: ["--bin-size", "fc=1"],
    "malformed bin size": lambda tmp: ["--bin-size", "fc"],
    "unknown model": lambda tmp: ["--model", "resnet9000"],
    "unknown dataset": lambda tmp: ["--dataset", "imagenet"],
    "missing data path": lambda tmp: ["--data-path", str(tmp / "missing.csv.gz")],
    "malformed data file": lambda tmp: [
        "--data-path",
        str(_write_garbage_digits(tmp / "bad.csv.gz")),
    ],
    "unwritable output dir": lambda tmp: ["--output-dir", str(_file_in_the_way(tmp))],
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2_on_every_rank(case: str, tmp_path: Path) -> None:
    args = BAD_INPUTS[case](tmp_path)
    # The case's options come last, so they override the short --epochs.
    result = run_mpi(3, [*train_command(), "--epochs", "1", *args], cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("adacomp-train: error: ")
    assert "Traceback" not in result.stdout + result.stderr
