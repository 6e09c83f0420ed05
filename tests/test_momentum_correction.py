"""Momentum correction with masking (docs/CODEC.md): the exact rule against a
plain NumPy reference, dense tensors, void steps, refused steps, checkpoints,
the overlapped (stepwise) encoder, and the trainer's wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mpi_util import run_mpi, train_command

from adacomp_mpi.codec import (
    CodecConfig,
    CompressionPolicy,
    TensorSpec,
    decode,
    encode,
    make_state,
)
from adacomp_mpi.codec.api import encode_counted, restore_residues
from adacomp_mpi.codec.blocks import BLOCK_ELEMENTS
from adacomp_mpi.codec.stepwise import StepEncoder
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.train.averager import GradientAverager
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.checkpoint import CheckpointError
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.correction import local_update, why_not
from adacomp_mpi.train.layers import gradient_specs
from adacomp_mpi.train.resume import check_trajectory
from adacomp_mpi.train.run import train

M = np.float32(0.9)
SPECS = (
    TensorSpec("w", 1200, kind="fc", bin_size=50),
    TensorSpec("b", 40, kind="other", compress=False),
    TensorSpec("v", 700, kind="fc", bin_size=500),
)


def reference_step(state: dict, grads: dict, *, scale_rule: str = "mean_abs") -> dict:
    """One step of the rule, element by element in float32, written from docs/CODEC.md."""
    sent = {}
    for spec in SPECS:
        u = M * state["u"][spec.name] + grads[spec.name]
        if not spec.compress:
            state["u"][spec.name] = u
            sent[spec.name] = u.copy()
            continue
        g = state["r"][spec.name] + u
        h = g + u
        q = np.zeros_like(g)
        chosen = []
        for start in range(0, g.size, spec.bin_size):
            gmax = np.abs(g[start : start + spec.bin_size]).max()
            for i in range(start, min(start + spec.bin_size, g.size)):
                if gmax > 0 and abs(h[i]) >= gmax and g[i] != 0:
                    chosen.append(i)
        chosen = np.array(chosen, np.int64)
        if chosen.size:
            scale = np.float32(np.abs(g[chosen]).mean(dtype=np.float64))
            q[chosen] = np.where(g[chosen] < 0, -scale, scale)
        state["r"][spec.name] = g - q
        u = u.copy()
        u[chosen] = 0
        state["u"][spec.name] = u
        sent[spec.name] = q
    return sent


def fresh_reference() -> dict:
    return {
        "u": {s.name: np.zeros(s.numel, np.float32) for s in SPECS},
        "r": {s.name: np.zeros(s.numel, np.float32) for s in SPECS},
    }


def gradients(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {s.name: (rng.standard_t(3, s.numel) * 1e-2).astype(np.float32) for s in SPECS}


def test_the_codec_follows_the_rule_exactly_step_after_step() -> None:
    rng = np.random.default_rng(0)
    state = make_state(SPECS, CodecConfig(momentum=float(M)))
    reference = fresh_reference()
    for _ in range(12):
        grads = gradients(rng)
        decoded = decode(encode(grads, state), SPECS)
        expected = reference_step(reference, grads)
        for index, spec in enumerate(SPECS):
            np.testing.assert_array_equal(decoded[spec.name], expected[spec.name])
            velocity = state.velocities.current[index]
            np.testing.assert_array_equal(velocity, reference["u"][spec.name])
            if spec.compress:
                np.testing.assert_array_equal(state.residues[index], reference["r"][spec.name])


def test_the_velocity_made_inside_the_blocked_scan_is_the_two_pass_one() -> None:
    """Several cache blocks and a short last one: the scan's block-by-block
    u = m * u + g gives the payload, residue and velocity of computing u first."""
    numel = 3 * BLOCK_ELEMENTS + 777
    specs = (TensorSpec("big", numel, kind="fc", bin_size=500),)
    corrected = make_state(specs, CodecConfig(momentum=float(M)))
    plain = make_state(specs)
    rng = np.random.default_rng(3)
    velocity = np.zeros(numel, np.float32)
    for _ in range(4):
        grad = (rng.standard_t(3, numel) * 1e-2).astype(np.float32)
        velocity = M * velocity + grad
        payload, expected = encode({"big": grad}, corrected), encode({"big": velocity}, plain)
        np.testing.assert_array_equal(payload, expected)
        np.testing.assert_array_equal(corrected.residues[0], plain.residues[0])
        velocity[decode(expected, specs)["big"] != 0] = 0
        np.testing.assert_array_equal(corrected.velocities.current[0], velocity)


def test_a_dense_tensor_carries_heavy_ball_momentum_unmasked() -> None:
    """The mean of the ranks' dense u is exactly SGD-momentum's velocity."""
    state = make_state(SPECS, CodecConfig(momentum=0.5))
    ones = {s.name: np.ones(s.numel, np.float32) for s in SPECS}
    for expected in (1.0, 1.5, 1.75):
        decoded = decode(encode(ones, state), SPECS)
        np.testing.assert_array_equal(decoded["b"], np.float32(expected))


def test_momentum_zero_is_the_plain_codec() -> None:
    rng = np.random.default_rng(1)
    plain, zero = make_state(SPECS), make_state(SPECS, CodecConfig(momentum=0.0))
    assert zero.velocities is None
    for _ in range(3):
        grads = gradients(rng)
        assert encode(grads, plain).tobytes() == encode(grads, zero).tobytes()


def test_a_dense_warmup_step_sends_u_and_keeps_it_unmasked() -> None:
    state = make_state(SPECS, CodecConfig(momentum=0.5))
    grads = {s.name: np.full(s.numel, 2, np.float32) for s in SPECS}
    encode(grads, state, dense=True)
    decoded = decode(encode(grads, state, dense=True), SPECS)
    for index, spec in enumerate(SPECS):
        np.testing.assert_array_equal(decoded[spec.name], np.float32(3))
        np.testing.assert_array_equal(state.velocities.current[index], np.float32(3))
        assert not state.residues[index].any()


def test_a_void_step_unmasks_sparse_velocities_and_reverts_dense_ones() -> None:
    rng = np.random.default_rng(2)
    state = make_state(SPECS, CodecConfig(momentum=float(M)))
    encode(gradients(rng), state)
    before_u = [u.copy() for u in state.velocities.current]
    before_r = [r.copy() for r in state.residues]
    grads = gradients(rng)
    payload = encode(grads, state)
    restore_residues(payload, state)
    for index, spec in enumerate(SPECS):
        advanced = M * before_u[index] + grads[spec.name]
        if spec.compress:  # as if nothing was sent: R = R_old + u_new, u = u_new
            np.testing.assert_array_equal(state.velocities.current[index], advanced)
            np.testing.assert_allclose(
                state.residues[index], before_r[index] + advanced, rtol=0, atol=1e-6
            )
        else:  # dropped, like every dense tensor of a void step
            np.testing.assert_array_equal(state.velocities.current[index], before_u[index])


def test_a_refused_step_leaves_velocities_and_residues_alone() -> None:
    rng = np.random.default_rng(3)
    state = make_state(SPECS, CodecConfig(momentum=float(M)))
    encode(gradients(rng), state)
    before = [u.copy() for u in state.velocities.current], [r.copy() for r in state.residues]
    grads = gradients(rng)
    grads["v"][5] = np.nan
    with pytest.raises(ValueError, match="'v' holds a NaN"):
        encode(grads, state)
    for old, new in zip(before[0], state.velocities.current, strict=True):
        np.testing.assert_array_equal(old, new)
    for old, new in zip(before[1], state.residues, strict=True):
        np.testing.assert_array_equal(old, new)


def test_the_stepwise_encoder_in_any_order_matches_encode() -> None:
    rng = np.random.default_rng(4)
    one = make_state(SPECS, CodecConfig(momentum=float(M)))
    other = make_state(SPECS, CodecConfig(momentum=float(M)))
    for _ in range(4):
        grads = gradients(rng)
        step = StepEncoder(other)
        for index in reversed(range(len(SPECS))):
            step.add(index, grads[SPECS[index].name])
        assert step.finish().payload.tobytes() == encode_counted(grads, one).payload.tobytes()
    for a, b in zip(one.velocities.current, other.velocities.current, strict=True):
        np.testing.assert_array_equal(a, b)


def test_state_dict_round_trip_and_mismatches() -> None:
    rng = np.random.default_rng(5)
    state = make_state(SPECS, CodecConfig(momentum=float(M)))
    encode(gradients(rng), state)
    saved = state.state_dict()
    copy = make_state(SPECS, CodecConfig(momentum=float(M)))
    copy.load_state_dict(saved)
    grads = gradients(rng)
    assert encode(grads, state).tobytes() == encode(grads, copy).tobytes()
    with pytest.raises(ValueError, match="saved with momentum correction"):
        make_state(SPECS).load_state_dict(saved)
    with pytest.raises(ValueError, match="saved without momentum correction"):
        make_state(SPECS, CodecConfig(momentum=0.5)).load_state_dict(make_state(SPECS).state_dict())
    with pytest.raises(ValueError, match="momentum must be in"):
        CodecConfig(momentum=1.0)


# ------------------------------------------------------------------ trainer side


def _config(tmp_path: Path, **options: object) -> TrainConfig:
    base = {"epochs": 1, "max_steps": 40, "output_dir": tmp_path, "quiet": True}
    return TrainConfig(**{**base, "momentum_correction": True, **options})


def test_the_trainer_steps_plain_sgd_and_the_codec_carries_momentum(tmp_path: Path) -> None:
    trainer = build_trainer(_config(tmp_path, weight_decay=1e-4), LocalCommunicator(), "cpu")
    group = trainer.optimizer.param_groups[0]
    assert group["momentum"] == 0 and group["weight_decay"] == 0
    assert trainer.codec_state.config.momentum == pytest.approx(0.9)
    assert trainer.local.weight_decay == pytest.approx(1e-4)


def test_it_is_sgds_default_with_a_residue_and_off_without(tmp_path: Path) -> None:
    """The defaults (SGD-momentum, AdaComp) correct; dense SGD and Adam keep the
    optimizer's own momentum."""
    assert TrainConfig().momentum_correction is True
    assert local_update(TrainConfig(), 2).momentum == pytest.approx(0.9)
    dense = build_trainer(_config(tmp_path, compression="none"), LocalCommunicator(), "cpu")
    assert dense.optimizer.param_groups[0]["momentum"] == pytest.approx(0.9)
    adam = local_update(TrainConfig(optimizer="adam"), 2)
    assert adam.momentum == 0 and adam.preconditioned


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"compression": "none"}, "--compression none"),
        ({"optimizer": "adam"}, "--optimizer adam"),
        ({"momentum": 0.0}, "--momentum 0"),
    ],
)
def test_where_the_correction_does_not_apply(options: dict, reason: str, tmp_path: Path) -> None:
    config = _config(tmp_path, **options)
    assert reason in why_not(config)
    assert local_update(config, 2).momentum == 0


def test_local_clipping_scales_with_the_ranks(tmp_path: Path) -> None:
    assert local_update(_config(tmp_path, clip_grad_norm=2.0), 4).clip_norm == pytest.approx(1.0)


@pytest.mark.parametrize("options", [{}, {"weight_decay": 1e-3}, {"accumulate": 2}])
def test_overlap_changes_nothing_with_the_correction(
    options: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    runs = [
        train(_config(tmp_path / overlap, overlap=overlap, **options), LocalCommunicator())
        for overlap in ("on", "off")
    ]
    assert runs[0]["param_digest"] == runs[1]["param_digest"]
    assert runs[0]["bytes_sent"] == runs[1]["bytes_sent"]


def test_resume_with_the_correction_is_bit_identical(tmp_path: Path) -> None:
    options = {"max_steps": 0, "dense_warmup_steps": 5, "clip_grad_norm": 1.0}
    straight = train(_config(tmp_path / "a", epochs=2, **options), LocalCommunicator())
    first = _config(
        tmp_path / "b", epochs=1, checkpoint_every=1, checkpoint_unit="epochs", **options
    )
    train(first, LocalCommunicator())
    again = _config(tmp_path / "b", epochs=2, resume="auto", **options)
    resumed = train(again, LocalCommunicator())
    assert resumed["param_digest"] == straight["param_digest"]
    assert resumed["bytes_sent"] == straight["bytes_sent"]


# ------------------------------------------------------------------ under mpiexec


def _cli(out: Path, *extra: str) -> list[str]:
    return [
        *train_command(),
        "--epochs",
        "2",
        "--max-steps",
        "60",
        "--momentum-correction",
        "--weight-decay",
        "1e-4",
        "--dense-warmup-steps",
        "3",
        "--quiet",
        "--output-dir",
        str(out),
        *extra,
    ]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ranks", [2, 3])
def test_replicas_stay_identical_and_resume_is_bit_identical(ranks: int, tmp_path: Path) -> None:
    env = {"OMP_NUM_THREADS": "1"}
    straight = run_mpi(ranks, _cli(tmp_path / "a"), env=env)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    first = run_mpi(
        ranks, _cli(tmp_path / "b", "--max-steps", "25", "--checkpoint-every", "25"), env=env
    )
    assert first.returncode == 0, first.stdout + first.stderr
    resumed = run_mpi(ranks, _cli(tmp_path / "b", "--resume", "auto"), env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    expected = json.loads((tmp_path / "a" / "summary.json").read_text())
    got = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert expected["params_identical"] is True and got["params_identical"] is True
    assert got["param_digest"] == expected["param_digest"]
    assert got["bytes_sent"] == expected["bytes_sent"]
    assert expected["config"]["momentum_correction"] is True


def test_the_averager_carries_the_velocity_and_checkpoints_it() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 30), torch.nn.Linear(30, 2))
    averager = GradientAverager(model, comm=LocalCommunicator(), momentum=0.5)
    for expected in (1.0, 1.5):
        averager.zero_grad()
        for param in model.parameters():
            param.grad.fill_(1.0)
        assert averager.synchronize()
        torch.testing.assert_close(model[1].bias.grad, torch.full((2,), expected))
    saved = averager.state_dict()
    assert set(saved["velocities"]) == {spec.name for spec in averager.specs}
    other = GradientAverager(model, comm=LocalCommunicator(), momentum=0.5)
    other.load_state_dict(saved)
    without = {key: value for key, value in saved.items() if key != "velocities"}
    with pytest.raises(ValueError, match="without momentum correction"):
        other.load_state_dict(without)


def test_a_checkpoint_from_before_the_remedies_ran_without_them(tmp_path: Path) -> None:
    saved = TrainConfig().to_dict()
    del saved["momentum_correction"], saved["compress_vectors"]
    check_trajectory(saved, TrainConfig(momentum_correction=False, compress_vectors=False))
    with pytest.raises(CheckpointError, match="momentum_correction: False -> True"):
        check_trajectory(saved, TrainConfig(momentum_correction=True))


def test_compress_vectors_compresses_large_biases_only() -> None:
    model = torch.nn.LSTM(8, 64)  # biases of 4 x 64 = 256 elements
    plain, _ = gradient_specs(model, CompressionPolicy())
    vectors, _ = gradient_specs(model, CompressionPolicy(compress_vectors=True))
    assert [s.compress for s in plain] == [True, True, False, False]
    assert [s.compress for s in vectors] == [True, True, True, True]
    small, _ = gradient_specs(torch.nn.Linear(300, 100), CompressionPolicy(compress_vectors=True))
    assert [s.compress for s in small] == [True, False]  # 100 < --dense-below 256


@pytest.mark.parametrize("overlap", ["on", "off"])
def test_a_void_step_leaves_the_velocities_alone(overlap: str, tmp_path: Path) -> None:
    trainer = build_trainer(_config(tmp_path, overlap=overlap), LocalCommunicator(), "cpu")
    rows = np.arange(16)
    trainer.train_step(rows)
    before = [u.copy() for u in trainer.codec_state.velocities.current]
    first = next(trainer.model.parameters())
    handle = first.register_hook(lambda grad: grad * np.nan)
    _, traffic = trainer.train_step(rows)
    handle.remove()
    assert not traffic.applied
    for old, new in zip(before, trainer.codec_state.velocities.current, strict=True):
        np.testing.assert_array_equal(old, new)
