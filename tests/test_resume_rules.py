"""Trainer.restore refuses checkpoints that would change or do not fit the run."""

from __future__ import annotations

import pytest
import torch

from adacomp_mpi.checkpoint import CheckpointError
from adacomp_mpi.communicator import LocalCommunicator
from adacomp_mpi.config import TrainConfig
from adacomp_mpi.trainer import Trainer, build_trainer, describe_launch


def _trainer(config: TrainConfig) -> Trainer:
    comm = LocalCommunicator()
    return build_trainer(config, comm, describe_launch(comm))


def _saved_state(trainer: Trainer) -> tuple[dict, dict]:
    codec = trainer.codec_state.state_dict()
    codec["residues"] = {k: torch.from_numpy(v) for k, v in codec["residues"].items()}
    common = {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "position": {"step": 3, "epoch": 0, "batch": 3},
        "totals": {"bytes_sent": 1.0, "dense_bytes": 2.0, "skipped_steps": 0, "seconds": {}},
        "config": trainer.config.to_dict(),
    }
    rank = {"codec": codec, "bytes_sent": 1, "torch_rng": torch.get_rng_state()}
    return common, rank


def test_a_fitting_checkpoint_restores_the_position() -> None:
    trainer = _trainer(TrainConfig())
    common, rank = _saved_state(trainer)
    trainer.restore(common, rank)
    assert (trainer.position.step, trainer.position.batch) == (3, 3)


def test_changed_trajectory_options_are_refused_by_name() -> None:
    common, rank = _saved_state(_trainer(TrainConfig(lr=0.05)))
    with pytest.raises(CheckpointError, match=r"lr: 0\.05 -> 0\.1"):
        _trainer(TrainConfig(lr=0.1)).restore(common, rank)


@pytest.mark.parametrize("damage", ["missing model key", "wrong shape", "no residues"])
def test_a_checkpoint_that_does_not_fit_is_a_clear_error(damage: str) -> None:
    trainer = _trainer(TrainConfig())
    common, rank = _saved_state(trainer)
    if damage == "missing model key":
        common["model"].pop(next(iter(common["model"])))
    elif damage == "wrong shape":
        first = next(iter(common["model"]))
        common["model"][first] = torch.zeros(3, 3)
    else:
        del rank["codec"]["residues"]
    with pytest.raises(CheckpointError, match="does not fit this run"):
        trainer.restore(common, rank)
