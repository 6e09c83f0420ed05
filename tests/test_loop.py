"""The training loop in-process, on the one-process communicator: void steps,
checkpoint scheduling, preemption, the ledger's totals and resume, in
milliseconds instead of through mpiexec."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from adacomp_mpi.common.errors import StopTraining
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.report.runs import read_records
from adacomp_mpi.train import checkpoint
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.gradients import parameter_digest
from adacomp_mpi.train.loop import Loop
from adacomp_mpi.train.metrics import MetricsWriter
from adacomp_mpi.train.progress import NoProgress
from adacomp_mpi.train.resume import maybe_resume
from adacomp_mpi.train.run import train
from adacomp_mpi.train.signals import EXIT_NONFINITE, EXIT_PREEMPTED, StopRequest
from adacomp_mpi.train.trainer import Trainer

STEPS_PER_EPOCH = 90  # 1437 digits training samples / batch 16, one rank


def _config(tmp_path: Path, **options: object) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "output_dir": tmp_path, "quiet": True, **options})


def _loop(config: TrainConfig, *, stop: StopRequest | None = None) -> Loop:
    trainer = build_trainer(config, LocalCommunicator(), torch.device("cpu"))
    maybe_resume(trainer)
    return Loop(
        trainer=trainer,
        metrics=MetricsWriter(config.output_dir / "metrics.jsonl"),
        progress=NoProgress(),
        stop=stop or StopRequest(),
    )


def _poison_gradient_at(trainer: Trainer, step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make one gradient non-finite at ``step`` only (the loss stays finite)."""
    first = next(trainer.model.parameters())

    def poison(grad: torch.Tensor) -> torch.Tensor:
        return grad * np.nan if trainer.step == step else grad

    first.register_hook(poison)


def test_the_ledger_totals_are_the_sum_of_the_step_records(tmp_path: Path) -> None:
    summary = train(_config(tmp_path), LocalCommunicator())
    steps = [r for r in read_records(tmp_path / "metrics.jsonl") if r["type"] == "step"]
    assert summary["steps"] == len(steps) == STEPS_PER_EPOCH
    assert summary["bytes_sent"] == sum(r["bytes_sent"] for r in steps)
    assert summary["dense_bytes"] == sum(r["dense_bytes"] for r in steps)
    assert summary["skipped_steps"] == 0
    assert summary["compression_ratio"] == pytest.approx(
        summary["dense_bytes"] / summary["bytes_sent"]
    )
    for phase, seconds in summary["time_breakdown"].items():
        assert seconds == pytest.approx(sum(r["time"][phase] for r in steps))


@pytest.mark.parametrize("overlap", ["on", "off"])
def test_a_void_step_is_skipped_and_leaves_the_parameters_alone(
    overlap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = _loop(_config(tmp_path, overlap=overlap))
    trainer = loop.trainer
    _poison_gradient_at(trainer, 3, monkeypatch)
    digests = []
    original = trainer.train_step

    def step_and_digest(rows: np.ndarray) -> tuple:
        digests.append(parameter_digest(trainer.model))
        return original(rows)

    monkeypatch.setattr(trainer, "train_step", step_and_digest)
    loop.run_epoch(0)
    assert trainer.ledger.totals.skipped_steps == 1
    assert digests[3] == digests[4]  # step 3 (0-based) changed nothing
    assert len(set(digests)) == STEPS_PER_EPOCH - 1
    assert all(np.isfinite(r).all() for r in trainer.codec_state.residues)


def test_overlapped_encoding_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same run with and without encoding during backward, and switching
    between the two (auto): same bytes, same model (at the same torch thread
    count: overlap otherwise reserves a core)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    runs = [
        train(_config(tmp_path / overlap, overlap=overlap), LocalCommunicator())
        for overlap in ("on", "off", "auto")
    ]
    assert len({run["param_digest"] for run in runs}) == 1
    assert len({run["bytes_sent"] for run in runs}) == 1


def test_overlap_auto_times_both_modes_then_keeps_one(tmp_path: Path) -> None:
    loop = _loop(_config(tmp_path, overlap="auto"))
    trainer, modes = loop.trainer, []
    original = trainer.train_step

    def step_and_note(rows: np.ndarray) -> tuple:
        result = original(rows)
        modes.append(trainer.overlapping)
        return result

    trainer.train_step = step_and_note
    loop.run_epoch(0)
    trial = trainer.overlap_trial
    assert trial.choice is not None
    counted = 2 * (trial.warmup + trial.samples)
    assert modes[:counted] == [False, True] * (counted // 2)  # alternating while timed
    assert set(modes[counted:]) == {trial.choice}  # then the faster one only


def test_a_non_finite_loss_under_overlap_changes_no_residue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = _loop(_config(tmp_path))
    trainer = loop.trainer
    assert trainer.overlap is not None
    loop.run_epoch(0)
    before = [r.copy() for r in trainer.codec_state.residues]
    rows = np.arange(16)
    trainer.dataset.x_train[rows[0]] = np.nan  # a NaN input makes the loss NaN
    local, traffic = trainer.train_step(rows)
    assert not traffic.applied and local.loss_sum == 0.0
    for old, new in zip(before, trainer.codec_state.residues, strict=True):
        np.testing.assert_array_equal(old, new)


def test_a_void_step_under_stop_checkpoints_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = _loop(_config(tmp_path, on_nonfinite="stop"))
    _poison_gradient_at(loop.trainer, 5, monkeypatch)
    with pytest.raises(StopTraining) as stopped:
        loop.run_epoch(0)
    assert stopped.value.exit_code == EXIT_NONFINITE
    saved = checkpoint.latest(tmp_path / "checkpoints")
    assert saved is not None and saved.name == "step-00000006"


def test_checkpoints_come_when_due_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    loop = _loop(_config(tmp_path, checkpoint_every=20, keep_checkpoints=2))
    loop.run_epoch(0)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000060", "step-00000080"]


def test_epoch_checkpoints_follow_the_epoch_count(tmp_path: Path) -> None:
    loop = _loop(_config(tmp_path, epochs=2, checkpoint_every=2, checkpoint_unit="epochs"))
    loop.run()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [f"step-{2 * STEPS_PER_EPOCH:08d}"]


def test_a_stop_request_checkpoints_and_exits_75(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = StopRequest()
    loop = _loop(_config(tmp_path), stop=stop)
    original = loop.trainer.train_step

    def signalled_at_step_7(rows: np.ndarray) -> tuple:
        if loop.trainer.step == 7:
            stop.signal_name = "SIGTERM"
        return original(rows)

    monkeypatch.setattr(loop.trainer, "train_step", signalled_at_step_7)
    with pytest.raises(StopTraining, match="preempted \\(SIGTERM\\) at step 8") as stopped:
        loop.run_epoch(0)
    assert stopped.value.exit_code == EXIT_PREEMPTED
    assert checkpoint.latest(tmp_path / "checkpoints").name == "step-00000008"


def test_resume_in_process_is_bit_identical(tmp_path: Path) -> None:
    straight = train(_config(tmp_path / "a", epochs=2), LocalCommunicator())
    first = _config(tmp_path / "b", epochs=1, checkpoint_every=1, checkpoint_unit="epochs")
    train(first, LocalCommunicator())
    resumed = train(_config(tmp_path / "b", epochs=2, resume="auto"), LocalCommunicator())
    assert resumed["param_digest"] == straight["param_digest"]
    assert resumed["steps"] == straight["steps"] == 2 * STEPS_PER_EPOCH
    assert resumed["bytes_sent"] == straight["bytes_sent"]
    assert math.isclose(resumed["test_loss"], straight["test_loss"], rel_tol=0, abs_tol=0)
