"""Momentum-factor masking rules (--momentum-masking, docs/CODEC.md): an
unmasked tensor's velocity runs on as heavy-ball SGD's, at the compensated
momentum with the step length kept, so the codec is the plain AdaComp codec
fed that velocity; masked tensors are zeroed where sent; void steps, resume,
old checkpoints and the trainer's defaults."""

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
from adacomp_mpi.train.correction import masking_rule, unmasked_momentum
from adacomp_mpi.train.resume import check_trajectory
from adacomp_mpi.train.run import train

M = np.float32(0.9)
SPECS = (
    TensorSpec("big", 2 * BLOCK_ELEMENTS + 333, kind="fc", bin_size=500),
    TensorSpec("b", 40, kind="other", compress=False),
    TensorSpec("lstm", 1200, kind="recurrent", bin_size=50),
)


def gradients(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {s.name: (rng.standard_t(3, s.numel) * 1e-2).astype(np.float32) for s in SPECS}


@pytest.mark.parametrize("lower", [None, 0.5])
def test_unmasked_tensors_are_the_plain_codec_fed_the_heavy_ball_velocity(lower) -> None:
    """u_t = M u_(t-1) + c g_t whatever was sent, c = (1 - M) / (1 - m): the
    payloads and residues are the plain codec's on u_t; dense tensors keep m."""
    rng = np.random.default_rng(0)
    config = CodecConfig(momentum=float(M), momentum_masking="none", unmasked_momentum=lower)
    corrected, plain = make_state(SPECS, config), make_state(SPECS)
    momentum = M if lower is None else np.float32(lower)
    gain = np.float32((1 - momentum) / (1 - M))
    velocity = {s.name: np.zeros(s.numel, np.float32) for s in SPECS}
    sent_somewhere = False
    for _ in range(6):
        grads = gradients(rng)
        for spec in SPECS:
            m, c = (momentum, gain) if spec.compress else (M, np.float32(1))
            velocity[spec.name] = m * velocity[spec.name] + c * grads[spec.name]
        payload = encode(grads, corrected)
        assert payload.tobytes() == encode(velocity, plain).tobytes()
        decoded = decode(payload, SPECS)
        for index, spec in enumerate(SPECS):
            np.testing.assert_array_equal(corrected.velocities.current[index], velocity[spec.name])
            if spec.compress:
                np.testing.assert_array_equal(corrected.residues[index], plain.residues[index])
                sent_somewhere |= bool(decoded[spec.name].any())
    assert sent_somewhere  # the velocity stayed whole where elements were sent


@pytest.mark.parametrize(("rule", "masked"), [("all", {"lstm", "big"}), ("recurrent", {"lstm"})])
def test_masking_zeroes_what_was_sent_in_the_tensors_its_rule_names(rule, masked) -> None:
    rng = np.random.default_rng(1)
    state = make_state(SPECS, CodecConfig(momentum=float(M), momentum_masking=rule))
    unmasked = make_state(SPECS, CodecConfig(momentum=float(M), momentum_masking="none"))
    grads = gradients(rng)
    payload = encode(grads, state)
    assert payload.tobytes() == encode(grads, unmasked).tobytes()  # the first step agrees
    decoded = decode(payload, SPECS)
    for index, spec in enumerate(SPECS):
        kept = state.velocities.current[index]
        sent = decoded[spec.name] != 0
        zeroed = sent if spec.name in masked else np.zeros(spec.numel, bool)
        assert sent.any()
        assert not kept[zeroed].any()
        np.testing.assert_array_equal(kept[~zeroed], grads[spec.name][~zeroed])


def test_a_void_step_keeps_the_advanced_velocity_of_sparse_tensors() -> None:
    rng = np.random.default_rng(2)
    config = CodecConfig(momentum=float(M), momentum_masking="recurrent", unmasked_momentum=0.5)
    state = make_state(SPECS, config)
    encode(gradients(rng), state)
    before_u = [u.copy() for u in state.velocities.current]
    grads = gradients(rng)
    restore_residues(encode(grads, state), state)
    gain = np.float32((1 - 0.5) / (1 - float(M)))  # the codec's c, from m as float32 gives it
    rates = {"big": (np.float32(0.5), gain), "lstm": (M, np.float32(1))}
    for index, spec in enumerate(SPECS):
        if spec.compress:  # as if nothing had been sent
            m, c = rates[spec.name]
            expected = m * before_u[index] + c * grads[spec.name]
        else:  # dropped, like every dense tensor of a void step
            expected = before_u[index]
        np.testing.assert_array_equal(state.velocities.current[index], expected)


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown masking rule 'some'"):
        CodecConfig(momentum=0.9, momentum_masking="some")
    with pytest.raises(ValueError, match="unmasked momentum must be in"):
        CodecConfig(momentum=0.9, unmasked_momentum=1.0)


def test_auto_masks_recurrent_weights_under_adacomp_and_everything_under_scalecom() -> None:
    assert TrainConfig().momentum_masking == "auto"
    assert masking_rule(TrainConfig()) == "recurrent"
    assert masking_rule(TrainConfig(compression="scalecom")) == "all"
    assert masking_rule(TrainConfig(momentum_masking="none")) == "none"
    assert unmasked_momentum(TrainConfig()) == pytest.approx(0.5)
    assert unmasked_momentum(TrainConfig(compressed_momentum=None)) is None
    assert unmasked_momentum(TrainConfig(momentum=0.4)) is None  # never raised


def _config(tmp_path: Path, **options: object) -> TrainConfig:
    base = {"epochs": 2, "max_steps": 0, "output_dir": tmp_path, "quiet": True}
    return TrainConfig(**{**base, **options})


def test_the_trainer_hands_the_rule_to_the_codec(tmp_path: Path) -> None:
    trainer = build_trainer(_config(tmp_path), LocalCommunicator(), "cpu")
    velocities = trainer.codec_state.velocities
    rates = zip(velocities.momenta, velocities.gains, strict=True)
    for spec, (m, c) in zip(trainer.codec_state.specs, rates, strict=True):
        assert (m, c) == ((np.float32(0.5), np.float32(5)) if spec.compress else (M, 1))
    assert not any(velocities.masked)  # the MLP has no recurrent weights
    assert trainer.optimizer.param_groups[0]["momentum"] == 0  # the correction still applies


def test_resume_without_masking_is_bit_identical(tmp_path: Path) -> None:
    options = {"momentum_masking": "none", "compressed_momentum": None}
    straight = train(_config(tmp_path / "a", **options), LocalCommunicator())
    checkpointed = {"checkpoint_every": 1, "checkpoint_unit": "epochs"}
    train(_config(tmp_path / "b", epochs=1, **checkpointed, **options), LocalCommunicator())
    resumed = train(_config(tmp_path / "b", resume="auto", **options), LocalCommunicator())
    assert resumed["param_digest"] == straight["param_digest"]
    assert resumed["bytes_sent"] == straight["bytes_sent"]
    masked = train(_config(tmp_path / "c", momentum_masking="all"), LocalCommunicator())
    assert masked["param_digest"] != straight["param_digest"]


def test_a_checkpoint_from_before_the_rules_masked_everything(tmp_path: Path) -> None:
    saved = TrainConfig().to_dict()
    del saved["momentum_masking"]
    check_trajectory(saved, TrainConfig(momentum_masking="all"))
    with pytest.raises(CheckpointError, match="momentum_masking: 'all' -> 'auto'"):
        check_trajectory(saved, TrainConfig())
