"""--val-fraction: a fixed validation split carved from the training data,
scored at every evaluation next to the test split."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from mpi_util import train_command

from adacomp_mpi.datasets import load_dataset
from adacomp_mpi.datasets.base import ArrayDataset, DatasetError
from adacomp_mpi.datasets.standardize import standardize
from adacomp_mpi.datasets.validation import carve_validation
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.report.runs import read_records
from adacomp_mpi.report.schema import validate_metrics_record
from adacomp_mpi.train.config import TRAJECTORY_OPTIONS, TrainConfig
from adacomp_mpi.train.run import train


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_the_split_is_disjoint_complete_and_fixed() -> None:
    digits = load_dataset("digits")
    carved = carve_validation(digits, 0.2)
    assert len(carved.x_val) == round(0.2 * len(digits.x_train))
    assert len(carved.x_train) + len(carved.x_val) == len(digits.x_train)
    assert not _rows(carved.x_train) & _rows(carved.x_val)
    assert _rows(carved.x_train) | _rows(carved.x_val) == _rows(digits.x_train)
    again = carve_validation(digits, 0.2)  # every rank computes the same split
    np.testing.assert_array_equal(again.x_val, carved.x_val)
    np.testing.assert_array_equal(again.y_val, carved.y_val)
    np.testing.assert_array_equal(carved.x_test, digits.x_test)  # the test split is untouched


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.0001, 0.99999])
def test_a_split_that_leaves_either_side_empty_is_refused(fraction: float) -> None:
    with pytest.raises(DatasetError, match="--val-fraction"):
        carve_validation(load_dataset("digits"), fraction)


def test_standardize_uses_the_remaining_training_statistics_for_validation_too() -> None:
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(200, 3)) * [1.0, 100.0, 4000.0] + 50).astype(np.float32)
    y = rng.integers(0, 2, size=200)
    raw = ArrayDataset("npz", x[:150], y[:150], x[150:], y[150:], num_classes=2)
    carved = carve_validation(raw, 0.2)
    scaled = standardize(carved)
    mean, std = carved.x_train.mean(axis=0), carved.x_train.std(axis=0)
    np.testing.assert_allclose(scaled.x_val, (carved.x_val - mean) / std, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scaled.x_train.mean(axis=0), 0, atol=1e-4)


def test_every_evaluation_scores_the_validation_split(tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, output_dir=tmp_path, quiet=True, val_fraction=0.1, eval_every=30)
    summary = train(config, LocalCommunicator())
    records = read_records(tmp_path / "metrics.jsonl")
    scored = [r for r in records if r["type"] in ("eval", "epoch")]
    for record in records:
        validate_metrics_record(record)  # val_* are documented fields
    assert scored and all(0 <= r["val_accuracy"] <= 1 for r in scored)
    assert all(r["val_loss"] > 0 for r in scored)
    # 1437 digits training samples less 144 held out: 1293 / 16 -> 81 steps an epoch
    assert summary["steps"] == 2 * 81
    assert "val_fraction" in TRAJECTORY_OPTIONS  # a resume may not move the split


def test_without_the_option_no_validation_is_scored(tmp_path: Path) -> None:
    train(TrainConfig(epochs=1, output_dir=tmp_path, quiet=True), LocalCommunicator())
    records = read_records(tmp_path / "metrics.jsonl")
    assert not any("val_loss" in r for r in records)


def test_an_empty_training_split_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [*train_command(), "--val-fraction", "0.99999", "--output-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("adacomp-train: error: --val-fraction")
    assert "Traceback" not in result.stderr
