"""restore refuses checkpoints that would change or do not fit the run."""

from __future__ import annotations

import pytest
import torch

from adacomp_mpi.codec.state import ARRAY_KEYS
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.checkpoint import CheckpointError
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.resume import check_trajectory, restore
from adacomp_mpi.train.trainer import Trainer


def _trainer(config: TrainConfig) -> Trainer:
    return build_trainer(config, LocalCommunicator(), torch.device("cpu"))


def _saved_state(trainer: Trainer) -> tuple[dict, dict]:
    codec = trainer.codec_state.state_dict()
    for key in ARRAY_KEYS:  # residues; velocities or second moments when kept
        if key in codec:
            codec[key] = {k: torch.from_numpy(v) for k, v in codec[key].items()}
    common = {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "ledger": {
            "position": {"step": 3, "epoch": 0, "batch": 3},
            "totals": {"bytes_sent": 1.0, "dense_bytes": 2.0, "skipped_steps": 0, "seconds": {}},
        },
        "config": trainer.config.to_dict(),
    }
    rank = {"codec": codec, "torch_rng": torch.get_rng_state()}
    return common, rank


def test_a_fitting_checkpoint_restores_the_position() -> None:
    trainer = _trainer(TrainConfig())
    common, rank = _saved_state(trainer)
    restore(trainer, common, rank)
    assert (trainer.ledger.position.step, trainer.ledger.position.batch) == (3, 3)


def test_changed_trajectory_options_are_refused_by_name() -> None:
    common, rank = _saved_state(_trainer(TrainConfig(lr=0.05)))
    with pytest.raises(CheckpointError, match=r"lr: 0\.05 -> 0\.1"):
        restore(_trainer(TrainConfig(lr=0.1)), common, rank)


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
        restore(trainer, common, rank)


def test_an_option_the_checkpoint_predates_counts_as_its_default() -> None:
    trainer = _trainer(TrainConfig())
    common, rank = _saved_state(trainer)
    del common["config"]["standardize"]
    restore(trainer, common, rank)  # the default then and now: fits
    saved = {**common["config"], "dataset": "npz"}
    with pytest.raises(CheckpointError, match=r"standardize: False -> True"):
        check_trajectory(saved, TrainConfig(dataset="npz", standardize=True))
