"""Momentum correction without masking (--no-momentum-masking, docs/CODEC.md):
the local velocity runs on as dense heavy-ball SGD's, so the codec is the plain
AdaComp codec fed that velocity; void steps, resume and the trainer's wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adacomp_mpi.codec import CodecConfig, TensorSpec, decode, encode, make_state
from adacomp_mpi.codec.api import restore_residues
from adacomp_mpi.codec.blocks import BLOCK_ELEMENTS
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.checkpoint import CheckpointError
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.resume import check_trajectory
from adacomp_mpi.train.run import train

M = np.float32(0.9)
SPECS = (
    TensorSpec("big", 2 * BLOCK_ELEMENTS + 333, kind="fc", bin_size=500),
    TensorSpec("b", 40, kind="other", compress=False),
    TensorSpec("w", 1200, kind="fc", bin_size=50),
)
UNMASKED = CodecConfig(momentum=float(M), momentum_masking=False)


def gradients(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {s.name: (rng.standard_t(3, s.numel) * 1e-2).astype(np.float32) for s in SPECS}


def test_unmasked_correction_is_the_plain_codec_fed_the_heavy_ball_velocity() -> None:
    """u_t = m u_(t-1) + g_t whatever was sent: the payloads and residues are
    the plain codec's on u_t, and the velocity is never zeroed."""
    rng = np.random.default_rng(0)
    corrected, plain = make_state(SPECS, UNMASKED), make_state(SPECS)
    velocity = {s.name: np.zeros(s.numel, np.float32) for s in SPECS}
    sent_somewhere = False
    for _ in range(6):
        grads = gradients(rng)
        velocity = {name: M * velocity[name] + grads[name] for name in velocity}
        payload = encode(grads, corrected)
        assert payload.tobytes() == encode(velocity, plain).tobytes()
        decoded = decode(payload, SPECS)
        for index, spec in enumerate(SPECS):
            np.testing.assert_array_equal(corrected.velocities.current[index], velocity[spec.name])
            if spec.compress:
                np.testing.assert_array_equal(corrected.residues[index], plain.residues[index])
                sent_somewhere |= bool(decoded[spec.name].any())
    assert sent_somewhere  # the velocity stayed whole where elements were sent


def test_masking_zeroes_what_was_sent_and_only_that() -> None:
    rng = np.random.default_rng(1)
    masked = make_state(SPECS, CodecConfig(momentum=float(M)))
    unmasked = make_state(SPECS, UNMASKED)
    grads = gradients(rng)
    payload = encode(grads, masked)
    assert payload.tobytes() == encode(grads, unmasked).tobytes()  # the first step agrees
    decoded = decode(payload, SPECS)
    for index, spec in enumerate(SPECS):
        kept = masked.velocities.current[index]
        whole = unmasked.velocities.current[index]
        sent = decoded[spec.name] != 0 if spec.compress else np.zeros(spec.numel, bool)
        assert not kept[sent].any()
        np.testing.assert_array_equal(kept[~sent], whole[~sent])
        np.testing.assert_array_equal(whole, grads[spec.name])


def test_a_void_step_keeps_the_advanced_velocity_of_sparse_tensors() -> None:
    rng = np.random.default_rng(2)
    state = make_state(SPECS, UNMASKED)
    encode(gradients(rng), state)
    before_u = [u.copy() for u in state.velocities.current]
    grads = gradients(rng)
    restore_residues(encode(grads, state), state)
    for index, spec in enumerate(SPECS):
        expected = M * before_u[index] + grads[spec.name] if spec.compress else before_u[index]
        np.testing.assert_array_equal(state.velocities.current[index], expected)


def _config(tmp_path: Path, **options: object) -> TrainConfig:
    base = {"epochs": 2, "max_steps": 0, "output_dir": tmp_path, "quiet": True}
    return TrainConfig(**{**base, "momentum_masking": False, **options})


def test_the_trainer_hands_the_switch_to_the_codec(tmp_path: Path) -> None:
    assert TrainConfig().momentum_masking is True
    trainer = build_trainer(_config(tmp_path), LocalCommunicator(), "cpu")
    assert trainer.codec_state.velocities.masking is False
    assert trainer.optimizer.param_groups[0]["momentum"] == 0  # the correction still applies


def test_resume_without_masking_is_bit_identical(tmp_path: Path) -> None:
    straight = train(_config(tmp_path / "a"), LocalCommunicator())
    first = _config(tmp_path / "b", epochs=1, checkpoint_every=1, checkpoint_unit="epochs")
    train(first, LocalCommunicator())
    resumed = train(_config(tmp_path / "b", resume="auto"), LocalCommunicator())
    assert resumed["param_digest"] == straight["param_digest"]
    assert resumed["bytes_sent"] == straight["bytes_sent"]
    masked = train(_config(tmp_path / "c", momentum_masking=True), LocalCommunicator())
    assert masked["param_digest"] != straight["param_digest"]


def test_a_checkpoint_from_before_the_switch_masked(tmp_path: Path) -> None:
    saved = TrainConfig().to_dict()
    del saved["momentum_masking"]
    check_trajectory(saved, TrainConfig())
    with pytest.raises(CheckpointError, match="momentum_masking: True -> False"):
        check_trajectory(saved, TrainConfig(momentum_masking=False))
