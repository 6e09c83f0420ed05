"""Momentum compensation (--compressed-momentum, train/optim.py): the rule, that a
run with it is exactly the run at the compensated settings, where it does not
apply, its option and its place among the trajectory options."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from mpi_util import train_command

from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.report.runs import read_records
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.checkpoint import CheckpointError
from adacomp_mpi.train.config import PREDATED, TrainConfig
from adacomp_mpi.train.optim import OptimizerSettings, describe_change, settings_for
from adacomp_mpi.train.resume import check_trajectory
from adacomp_mpi.train.run import train


def test_sgd_momentum_is_lowered_and_the_step_length_kept() -> None:
    config = TrainConfig(lr=0.01, momentum=0.9, compressed_momentum=0.5, weight_decay=1e-4)
    settings = settings_for(config, local_momentum=False)
    assert settings.momentum == 0.5
    assert settings.weight_decay == 1e-4
    # heavy-ball's step on a steady gradient, lr / (1 - m), is what was asked for
    assert settings.lr / (1 - settings.momentum) == pytest.approx(0.01 / (1 - 0.9))


def test_adam_lowers_beta1_and_keeps_its_learning_rate() -> None:
    config = TrainConfig(optimizer="adam", lr=1e-3, momentum=0.9, compressed_momentum=0.5)
    settings = settings_for(config, local_momentum=False)
    assert settings == OptimizerSettings(lr=1e-3, momentum=0.5, weight_decay=0.0)
    optimizer = settings_optimizer(config)
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.999)


def settings_optimizer(config: TrainConfig) -> torch.optim.Optimizer:
    from adacomp_mpi.train.optim import OPTIMIZERS

    params = [torch.nn.Parameter(torch.zeros(3))]
    return OPTIMIZERS[config.optimizer](params, settings_for(config, local_momentum=False))


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "none"},  # no residue, no delay
        {"compressed_momentum": None},  # off
        {"momentum": 0.5},  # not above M
        {"momentum": 0.0},
    ],
)
def test_the_optimizer_is_as_asked_where_compensation_does_not_apply(options: dict) -> None:
    config = TrainConfig(**{"lr": 0.01, "momentum": 0.9, **options})
    settings = settings_for(config, local_momentum=False)
    assert settings == OptimizerSettings(config.lr, config.momentum, config.weight_decay)
    assert describe_change(config, settings, local_momentum=False) is None


def test_momentum_correction_takes_precedence_with_plain_sgd() -> None:
    config = TrainConfig(lr=0.01, momentum=0.9, weight_decay=1e-4, momentum_correction=True)
    assert settings_for(config, local_momentum=True) == OptimizerSettings(0.01, 0.0, 0.0)


def test_a_compensated_run_is_the_run_at_the_compensated_settings(tmp_path: Path) -> None:
    """--lr 0.01 --momentum 0.9 with M = 0.5 trains exactly as --lr 0.05 --momentum 0.5
    without compensation: same parameters bit for bit, same recorded rates."""
    common = {"epochs": 1, "quiet": True, "lr_schedule": "cosine", "max_steps": 30}
    common["momentum_correction"] = False  # compensation is the remedy under test
    compensated = train(
        TrainConfig(
            **common, lr=0.01, momentum=0.9, compressed_momentum=0.5, output_dir=tmp_path / "a"
        ),
        LocalCommunicator(),
    )
    asked = train(
        TrainConfig(
            **common, lr=0.05, momentum=0.5, compressed_momentum=None, output_dir=tmp_path / "b"
        ),
        LocalCommunicator(),
    )
    plain = train(
        TrainConfig(
            **common, lr=0.01, momentum=0.9, compressed_momentum=None, output_dir=tmp_path / "c"
        ),
        LocalCommunicator(),
    )
    assert compensated["param_digest"] == asked["param_digest"]
    assert compensated["param_digest"] != plain["param_digest"]
    rates = {run: _rates(tmp_path / run) for run in "abc"}
    assert rates["a"] == pytest.approx(rates["b"])  # the rate the optimizer used
    assert rates["a"] == pytest.approx([5 * rate for rate in rates["c"]])


def _rates(out: Path) -> list[float]:
    return [r["lr"] for r in read_records(out / "metrics.jsonl") if r["type"] == "step"]


def test_the_trainer_steps_at_the_compensated_rate(tmp_path: Path) -> None:
    config = TrainConfig(
        lr=0.01, momentum=0.9, momentum_correction=False, output_dir=tmp_path, quiet=True
    )
    trainer = build_trainer(config, LocalCommunicator(), torch.device("cpu"))
    assert trainer.base_lrs == pytest.approx((0.05,))
    assert trainer.optimizer.param_groups[0]["momentum"] == 0.5


def _conv_weights(model: torch.nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Conv2d)}


def test_finely_binned_tensors_keep_the_asked_momentum_and_lr(tmp_path: Path) -> None:
    """The CNN with SGD: conv weights (L_T 50) keep momentum 0.9 at lr 0.01, the
    rest steps at 0.5 and 0.05; the schedule scales both groups by one factor."""
    common = {"model": "cnn", "dataset": "digits", "quiet": True, "lr": 0.01}
    common["momentum_correction"] = False  # compensation, not SGD's default correction
    config = TrainConfig(**common, lr_warmup_steps=10, output_dir=tmp_path / "a")
    trainer = build_trainer(config, LocalCommunicator(), torch.device("cpu"))
    groups = trainer.optimizer.param_groups
    assert [group["momentum"] for group in groups] == pytest.approx([0.5, 0.9])
    assert trainer.base_lrs == pytest.approx((0.05, 0.01))
    assert {id(p) for p in groups[1]["params"]} == _conv_weights(trainer.model)
    factor = trainer.schedule.factor(trainer.step)
    assert 0 < factor < 1  # in the warm-up
    trainer._optimizer_step()
    assert [group["lr"] for group in groups] == pytest.approx([0.05 * factor, 0.01 * factor])
    every = TrainConfig(**common, remedy_min_bin=0, output_dir=tmp_path / "b")
    whole = build_trainer(every, LocalCommunicator(), torch.device("cpu"))
    assert len(whole.optimizer.param_groups) == 1
    dense = TrainConfig(**common, compression="none", output_dir=tmp_path / "c")
    assert len(build_trainer(dense, LocalCommunicator(), "cpu").optimizer.param_groups) == 1


def test_a_fine_group_run_is_the_run_with_conv_uncompensated(tmp_path: Path) -> None:
    """Training moves both groups: after a few steps the conv weights differ from
    a run that compensates every tensor, and the run is deterministic."""
    common = {"model": "cnn", "dataset": "digits", "quiet": True, "lr": 0.01, "max_steps": 6}
    common["momentum_correction"] = False
    runs = [
        train(
            TrainConfig(**common, remedy_min_bin=bins, output_dir=tmp_path / name),
            LocalCommunicator(),
        )
        for name, bins in (("a", 100), ("b", 100), ("c", 0))
    ]
    assert runs[0]["param_digest"] == runs[1]["param_digest"]
    assert runs[0]["param_digest"] != runs[2]["param_digest"]


def test_a_resume_may_not_change_it_and_older_runs_ran_without_it() -> None:
    saved = TrainConfig(compressed_momentum=0.5).to_dict()
    with pytest.raises(CheckpointError, match="compressed_momentum"):
        check_trajectory(saved, TrainConfig(compressed_momentum=None))
    assert PREDATED["compressed_momentum"] is None
    with pytest.raises(CheckpointError, match="remedy_min_bin"):
        check_trajectory(saved, TrainConfig(remedy_min_bin=0))
    assert PREDATED["remedy_min_bin"] == 0  # before it, every tensor was compensated


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--compressed-momentum", "1.0"),
        ("--compressed-momentum", "-0.1"),
        ("--compressed-momentum", "fast"),
        ("--remedy-min-bin", "-1"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(tmp_path: Path, option: str, value: str) -> None:
    command = [
        *train_command(),
        option,
        value,
        "--output-dir",
        str(tmp_path / "r"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert option in done.stderr
    assert not (tmp_path / "r").exists()
