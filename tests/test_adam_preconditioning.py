"""Adam preconditioning (docs/CODEC.md): the rule against a NumPy reference,
commit and undo, refused and void steps, checkpoints, the stepwise encoder,
the trainer's wiring, Adam's own step where the two must agree, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mpi_util import run_mpi, train_command

from adacomp_mpi.codec import CodecConfig, TensorSpec, decode, encode, make_state
from adacomp_mpi.codec.api import restore_residues
from adacomp_mpi.codec.stepwise import StepEncoder
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.train.averager import GradientAverager
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.checkpoint import CheckpointError
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.resume import check_trajectory
from adacomp_mpi.train.run import train

B2, EPS = 0.999, 1e-8
SPECS = (
    TensorSpec("w", 1200, kind="fc", bin_size=50),
    TensorSpec("b", 40, kind="other", compress=False),
    TensorSpec("v", 700, kind="fc", bin_size=500),
)
CONFIG = CodecConfig(adam_beta2=B2, adam_eps=EPS)


def gradients(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        spec.name: (rng.standard_normal(spec.numel) * scale).astype(np.float32) for spec in SPECS
    }


def reference(grads: list[dict[str, np.ndarray]], ranks: int = 1) -> tuple[dict, dict]:
    """u of the last step and v after it, in float64, from the rule in docs/CODEC.md."""
    v = {spec.name: np.zeros(spec.numel) for spec in SPECS}
    a = {spec.name: np.zeros(spec.numel) for spec in SPECS}
    for t, step in enumerate(grads, start=1):
        u = {}
        for name, g in step.items():
            g = g.astype(np.float64)
            v[name] = B2 * v[name] + (1 - B2) * g * g
            a[name] = 0.9 * a[name] + 0.1 * g
            mean_hat, v_hat = a[name] / (1 - 0.9**t), v[name] / (1 - B2**t)
            moment = (1 - 1 / ranks) * mean_hat**2 + v_hat / ranks
            u[name] = g / (np.sqrt(moment) + EPS)
    return u, v


@pytest.mark.parametrize("ranks", [1, 4])
def test_dense_steps_send_g_over_the_root_of_the_mean_gradients_moment(ranks: int) -> None:
    rng = np.random.default_rng(0)
    state = make_state(SPECS, CodecConfig(adam_beta2=B2, adam_eps=EPS, adam_ranks=ranks))
    steps = [gradients(rng, scale) for scale in (1.0, 3.0, 0.01, 1.0)]
    for grads in steps:
        payload = encode(grads, state, dense=True)
    expected_u, expected_v = reference(steps, ranks)
    sent = decode(payload, SPECS)
    for index, spec in enumerate(SPECS):
        np.testing.assert_allclose(sent[spec.name], expected_u[spec.name], rtol=2e-5)
        np.testing.assert_allclose(
            state.second_moments.current[index], expected_v[spec.name], rtol=2e-5
        )
    assert state.second_moments.steps == 4
    # The residues see nothing of a dense step; the preconditioned scale is about 1.
    assert all(not residue.any() for residue in state.residues)
    assert 0.1 < np.abs(sent["w"]).mean() < 10


def test_the_residue_accumulates_preconditioned_gradients() -> None:
    """Sparse steps: what was sent plus the residue is the sum of the u's."""
    rng = np.random.default_rng(1)
    state = make_state(SPECS, CONFIG)
    steps = [gradients(rng, 100.0) for _ in range(5)]
    total = {spec.name: np.zeros(spec.numel) for spec in SPECS}
    sent_total = {spec.name: np.zeros(spec.numel) for spec in SPECS}
    for t in range(1, len(steps) + 1):
        u, _ = reference(steps[:t])
        for name in total:
            total[name] += u[name]
        sent = decode(encode(steps[t - 1], state), SPECS)
        for name in sent_total:
            sent_total[name] += sent[name]
    for index, spec in enumerate(SPECS):
        if spec.compress:
            held = sent_total[spec.name] + state.residues[index]
            np.testing.assert_allclose(held, total[spec.name], rtol=1e-4, atol=1e-4)
        # Units of u, not of g: a gradient 100 times larger is sent no larger.
        assert np.abs(sent_total[spec.name]).max() < 50


def test_a_void_step_puts_v_and_t_back() -> None:
    rng = np.random.default_rng(2)
    state = make_state(SPECS, CONFIG)
    encode(gradients(rng), state)
    before = [v.copy() for v in state.second_moments.current]
    payload = encode(gradients(rng), state)
    restore_residues(payload, state)  # some rank voided the step
    assert state.second_moments.steps == 1
    for old, new in zip(before, state.second_moments.current, strict=True):
        np.testing.assert_array_equal(old, new)


def test_a_refused_step_leaves_v_and_t_alone() -> None:
    rng = np.random.default_rng(3)
    state = make_state(SPECS, CONFIG)
    encode(gradients(rng), state)
    before = [v.copy() for v in state.second_moments.current]
    bad = gradients(rng)
    bad["v"][3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        encode(bad, state)
    assert state.second_moments.steps == 1
    for old, new in zip(before, state.second_moments.current, strict=True):
        np.testing.assert_array_equal(old, new)


def test_the_stepwise_encoder_in_any_order_matches_encode() -> None:
    rng = np.random.default_rng(4)
    one, other = make_state(SPECS, CONFIG), make_state(SPECS, CONFIG)
    for _ in range(4):
        grads = gradients(rng)
        step = StepEncoder(other)
        for index in reversed(range(len(SPECS))):
            step.add(index, grads[SPECS[index].name])
        assert step.finish().payload.tobytes() == encode(grads, one).tobytes()


def test_state_dict_round_trip_and_mismatches() -> None:
    rng = np.random.default_rng(5)
    state = make_state(SPECS, CONFIG)
    encode(gradients(rng), state)
    saved = state.state_dict()
    assert saved["adam_steps"] == 1 and set(saved["adam_means"]) == {s.name for s in SPECS}
    copy = make_state(SPECS, CONFIG)
    copy.load_state_dict(saved)
    grads = gradients(rng)
    assert encode(grads, state).tobytes() == encode(grads, copy).tobytes()
    with pytest.raises(ValueError, match="saved with Adam preconditioning"):
        make_state(SPECS).load_state_dict(saved)
    with pytest.raises(ValueError, match="saved without Adam preconditioning"):
        make_state(SPECS, CONFIG).load_state_dict(make_state(SPECS).state_dict())
    with pytest.raises(ValueError, match="exclude each other"):
        CodecConfig(adam_beta2=B2, momentum=0.9)
    with pytest.raises(ValueError, match="beta2 must be in"):
        CodecConfig(adam_beta2=1.0)


# ------------------------------------------------------------------ trainer side


def _config(tmp_path: Path, **options: object) -> TrainConfig:
    base = {"epochs": 1, "max_steps": 30, "output_dir": tmp_path, "quiet": True}
    return TrainConfig(**{**base, "optimizer": "adam", "lr": 1e-3, **options})


def test_the_trainer_steps_adams_first_moment_and_the_codec_its_second(tmp_path: Path) -> None:
    trainer = build_trainer(_config(tmp_path, weight_decay=1e-4), LocalCommunicator(), "cpu")
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    group = trainer.optimizer.param_groups[0]
    # beta1 0.9 lowered to 0.5 by momentum compensation; an EMA: dampening = momentum.
    assert group["momentum"] == group["dampening"] == pytest.approx(0.5)
    assert group["weight_decay"] == 0 and group["lr"] == pytest.approx(1e-3)
    assert trainer.codec_state.config.adam_beta2 == pytest.approx(B2)
    assert trainer.local.weight_decay == pytest.approx(1e-4)
    plain = build_trainer(
        _config(tmp_path / "off", adam_preconditioning=False), LocalCommunicator(), "cpu"
    )
    assert isinstance(plain.optimizer, torch.optim.Adam)
    assert plain.codec_state.second_moments is None
    for options in ({"optimizer": "sgd", "lr": 0.05}, {"compression": "none"}):
        other = build_trainer(_config(tmp_path / "x", **options), LocalCommunicator(), "cpu")
        assert other.codec_state.second_moments is None


def test_preconditioned_runs_bin_fc_weights_by_700_unless_told(tmp_path: Path) -> None:
    """Adam preconditioning's default L_T for fc/recurrent/embedding is 700;
    --bin-size wins, and runs without preconditioning keep the paper's 500."""

    def fc_bins(**options: object) -> set[int]:
        trainer = build_trainer(_config(tmp_path, **options), LocalCommunicator(), "cpu")
        return {s.bin_size for s in trainer.codec_state.specs if s.kind == "fc"}

    assert fc_bins() == {700}
    assert fc_bins(bin_sizes={"fc": 300}) == {300}
    assert fc_bins(adam_preconditioning=False) == {500}
    assert fc_bins(optimizer="sgd", lr=0.05) == {500}
    assert fc_bins(compression="scalecom") == {500}


def test_dense_steps_with_beta1_zero_are_adams_steps(tmp_path: Path) -> None:
    """With beta1 = 0 Adam's step is lr * g / (sqrt(v_hat) + eps): on one rank
    with every step dense, the preconditioned run must follow torch's Adam."""
    options = {"momentum": 0.0, "dense_warmup_steps": 1000, "max_steps": 12, "seed": 3}
    trainer = build_trainer(_config(tmp_path / "p", **options), LocalCommunicator(), "cpu")
    reference_model = build_trainer(
        _config(tmp_path / "a", compression="none", **options), LocalCommunicator(), "cpu"
    )
    assert isinstance(reference_model.optimizer, torch.optim.Adam)
    assert isinstance(trainer.optimizer, torch.optim.SGD)  # Adam's division is the codec's
    rows = np.arange(16)
    for step in range(12):
        batch = (rows + 16 * step) % len(trainer.dataset.x_train)
        trainer.train_step(batch)
        trainer.ledger.position.step += 1
        reference_model.train_step(batch)
        reference_model.ledger.position.step += 1
    for mine, theirs in zip(
        trainer.model.parameters(), reference_model.model.parameters(), strict=True
    ):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_resume_with_preconditioning_is_bit_identical(tmp_path: Path) -> None:
    options = {"max_steps": 0, "dense_warmup_steps": 5, "weight_decay": 1e-4}
    straight = train(_config(tmp_path / "a", epochs=2, **options), LocalCommunicator())
    first = _config(
        tmp_path / "b", epochs=1, checkpoint_every=1, checkpoint_unit="epochs", **options
    )
    train(first, LocalCommunicator())
    again = _config(tmp_path / "b", epochs=2, resume="auto", **options)
    resumed = train(again, LocalCommunicator())
    assert resumed["param_digest"] == straight["param_digest"]
    assert resumed["bytes_sent"] == straight["bytes_sent"]


def test_a_checkpoint_from_before_preconditioning_ran_without_it() -> None:
    saved = TrainConfig().to_dict()
    del saved["adam_preconditioning"]
    check_trajectory(saved, TrainConfig(adam_preconditioning=False))
    with pytest.raises(CheckpointError, match="adam_preconditioning: False -> True"):
        check_trajectory(saved, TrainConfig())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ranks", [2, 3])
def test_replicas_stay_identical_under_mpiexec(ranks: int, tmp_path: Path) -> None:
    args = ["--optimizer", "adam", "--lr", "0.001", "--weight-decay", "1e-4", "--quiet"]
    common = [*train_command(), "--epochs", "1", "--max-steps", "40", *args]
    done = run_mpi(ranks, [*common, "--output-dir", str(tmp_path)], env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["params_identical"] is True
    assert summary["config"]["adam_preconditioning"] is True
    assert summary["compression_ratio"] > 20


def test_the_averager_preconditions_and_checkpoints_the_second_moments() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 30), torch.nn.Linear(30, 2))
    averager = GradientAverager(model, comm=LocalCommunicator(), adam_beta2=B2)
    averager.zero_grad()
    for param in model.parameters():
        param.grad.fill_(-4.0)
    assert averager.synchronize()
    # The first step's u is g / (|g| + eps): -1 wherever the dense bias was sent.
    torch.testing.assert_close(model[1].bias.grad, torch.full((2,), -1.0))
    saved = averager.state_dict()
    assert saved["adam_steps"] == 1
    assert set(saved["second_moments"]) == {spec.name for spec in averager.specs}
    other = GradientAverager(model, comm=LocalCommunicator(), adam_beta2=B2)
    other.load_state_dict(saved)
    assert other.state_dict()["adam_steps"] == 1
    without = {key: value for key, value in saved.items() if key != "second_moments"}
    with pytest.raises(ValueError, match="without Adam preconditioning"):
        other.load_state_dict(without)


def test_scalecom_preconditions_and_advances_t_once_per_applied_step(tmp_path: Path) -> None:
    config = _config(tmp_path, compression="scalecom", max_steps=12, dense_warmup_steps=2)
    trainer = build_trainer(config, LocalCommunicator(), "cpu")
    assert trainer.codec_state.second_moments is not None
    rows = np.arange(16)
    for step in range(12):
        trainer.train_step((rows + 16 * step) % len(trainer.dataset.x_train))
        trainer.ledger.position.step += 1
    assert trainer.codec_state.second_moments.steps == 12
    assert all(np.isfinite(p.detach().numpy()).all() for p in trainer.model.parameters())


def test_overlap_changes_nothing_with_preconditioning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    runs = [
        train(_config(tmp_path / mode, overlap=mode, weight_decay=1e-3), LocalCommunicator())
        for mode in ("on", "off")
    ]
    assert runs[0]["param_digest"] == runs[1]["param_digest"]
    assert runs[0]["bytes_sent"] == runs[1]["bytes_sent"]


def test_finely_binned_tensors_keep_the_asked_for_beta1(tmp_path: Path) -> None:
    """The CNN: conv weights (L_T 50) keep beta1 0.9, the rest is compensated to 0.5."""
    config = _config(tmp_path, model="cnn", dataset="digits")
    trainer = build_trainer(config, LocalCommunicator(), "cpu")
    groups = trainer.optimizer.param_groups
    assert [group["momentum"] for group in groups] == pytest.approx([0.5, 0.9])
    assert all(group["dampening"] == group["momentum"] for group in groups)
    conv = {
        id(p) for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d) for p in [m.weight]
    }
    assert {id(p) for p in groups[1]["params"]} == conv
    mlp = build_trainer(_config(tmp_path / "mlp"), LocalCommunicator(), "cpu")
    assert len(mlp.optimizer.param_groups) == 1


def test_the_blocked_passes_give_the_same_floats(monkeypatch: pytest.MonkeyPatch) -> None:
    from adacomp_mpi.codec import preconditioner

    rng = np.random.default_rng(6)
    spec = [TensorSpec("w", 10_000, kind="fc", bin_size=500)]
    grads = [rng.standard_normal(10_000).astype(np.float32) for _ in range(3)]
    results = []
    for block in (1 << 20, 999):
        monkeypatch.setattr(preconditioner, "BLOCK_ELEMENTS", block)
        moments = preconditioner.SecondMoments(spec, beta2=B2, eps=EPS, ranks=3)
        for grad in grads:
            u = moments.precondition(0, grad).copy()
            moments.commit()
        results.append((u, moments.current[0].copy(), moments.means[0].copy()))
    for whole, blocked in zip(*results, strict=True):
        np.testing.assert_array_equal(whole, blocked)
