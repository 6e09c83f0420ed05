"""--compression scalecom: the shared-index codec in process, the exchange
under ``mpiexec -n 2`` and ``-n 3``, and whole training runs (identical
replicas, a void step, bit-identical resume)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mpi_util import run_mpi, run_program, train_command

from adacomp_mpi import PayloadError, TensorSpec, make_state
from adacomp_mpi.codec.indexcoding import METHOD_NAMES
from adacomp_mpi.codec.selection import select_and_update
from adacomp_mpi.codec.shared_indices import (
    accumulate,
    commit,
    contribution,
    leader_for,
    void_flags,
    voided_ranks,
)
from adacomp_mpi.codec.shared_selection import (
    ScaleComConfig,
    SharedSelection,
)
from adacomp_mpi.codec.shared_wire import pack_positions, unpack_positions
from adacomp_mpi.codec.state import CodecConfig
from adacomp_mpi.dist.buffer import GradientBuffer
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.dist.scalecom import ScaleComExchange

SPECS = [
    TensorSpec("conv", 3_001, "conv", 50),
    TensorSpec("fc", 12_345, "fc", 500),
    TensorSpec("bias", 9, "other", 500, compress=False),
]
AUTO = METHOD_NAMES["auto"]
RULES = ("fixed", "adaptive")


def config_of(rule: str, **options: Any) -> ScaleComConfig:
    return ScaleComConfig(shared_selection=SharedSelection(rule), **options)


def grads_of(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: (rng.standard_normal(s.numel) * scale).astype(np.float32) for s in SPECS}


def warmed_state(config: CodecConfig | None = None, steps: int = 3, seed: int = 0):
    """A state whose residues are not zero (a few plain steps taken)."""
    state = make_state(SPECS, config)
    for step in range(steps):
        grads = grads_of(1000 * seed + step)
        positions = accumulate(grads, state, leader=True)
        commit(state, positions, contribution(grads, state, positions).values)
    return state


# -- the codec, in process ------------------------------------------------------


def test_adaptive_leader_positions_are_adacomps_selection() -> None:
    state = warmed_state(config_of("adaptive"))
    reference = [r.copy() for r in state.residues]
    grads = grads_of(77)
    positions = accumulate(grads, state, leader=True)
    assert all(np.array_equal(a, b) for a, b in zip(reference, state.residues, strict=True))
    adacomp = make_state(SPECS)
    for index, where in zip((0, 1), positions, strict=True):
        spec = SPECS[index]
        residue = reference[index].copy()
        selection = select_and_update(
            residue,
            grads[spec.name],
            bin_size=spec.bin_size,
            scale_rule="mean_abs",
            workspace=adacomp.workspace,
        )
        assert where.size > 0
        assert np.array_equal(where, selection.indices)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("values", ["fp32", "fp16"])
def test_error_feedback_is_exact_per_rank(values: str, rule: str) -> None:
    """R_after + contributed == R_before + dW, bit for bit, on every rank."""
    config = config_of(rule, shared_values=values)
    ranks = [warmed_state(config, seed=r) for r in range(3)]
    grads = [grads_of(50 + r) for r in range(3)]
    before = [[res.copy() for res in s.residues] for s in ranks]
    positions = accumulate(grads[1], ranks[1], leader=True)  # rank 1 leads
    accumulate(grads[0], ranks[0], leader=False)
    accumulate(grads[2], ranks[2], leader=False)
    for r, state in enumerate(ranks):
        sent = contribution(grads[r], state, positions, values=values).values
        commit(state, positions, sent)
        at = 0
        for index, where in zip((0, 1), positions, strict=True):
            contributed = np.zeros(SPECS[index].numel, np.float32)
            contributed[where] = sent[at : at + where.size].astype(np.float32)
            at += where.size
            accumulated = before[r][index] + grads[r][SPECS[index].name]
            assert np.array_equal(state.residues[index] + contributed, accumulated)
            if values == "fp32":
                assert not state.residues[index][where].any()


def test_beta_is_a_low_pass_filter_on_the_residue() -> None:
    beta = 0.3
    state = warmed_state(CodecConfig(shared_beta=beta))
    before = [r.copy() for r in state.residues]
    grads = grads_of(5)
    positions = accumulate(grads, state, leader=True)
    sent = contribution(grads, state, positions).values
    commit(state, positions, sent, beta=beta)
    at = 0
    for index, where in zip((0, 1), positions, strict=True):
        unsent = before[index] + grads[SPECS[index].name]
        unsent[where] -= sent[at : at + where.size]
        at += where.size
        expected = np.float32(beta) * unsent + np.float32(1 - beta) * before[index]
        np.testing.assert_allclose(state.residues[index], expected, rtol=1e-6, atol=1e-7)


def test_momentum_correction_sends_the_local_velocity_and_masks_it() -> None:
    """With momentum correction the codec accumulates u = m u + dW in place of
    dW (exact feedback: R_after + c == R_before + u) and zeroes u where sent."""
    config = CodecConfig(momentum=0.9)
    state = warmed_state(config)
    u_before = [u.copy() for u in state.velocities.current]
    r_before = [r.copy() for r in state.residues]
    grads = grads_of(21)
    positions = accumulate(grads, state, leader=True)
    part = contribution(grads, state, positions)
    commit(state, positions, part.values)
    at = 0
    for index, where in zip((0, 1), positions, strict=True):
        name = SPECS[index].name
        u = u_before[index] * np.float32(0.9) + grads[name]
        contributed = np.zeros(SPECS[index].numel, np.float32)
        contributed[where] = part.values[at : at + where.size]
        at += where.size
        assert np.array_equal(state.residues[index] + contributed, r_before[index] + u)
        masked = u.copy()
        masked[where] = 0
        assert np.array_equal(state.velocities.current[index], masked)
    bias = u_before[2] * np.float32(0.9) + grads["bias"]
    assert np.array_equal(part.dense, bias)  # dense tensors carry u, unmasked
    assert np.array_equal(state.velocities.current[2], bias)


def test_index_message_round_trip_and_refusals() -> None:
    state = warmed_state()
    positions = accumulate(grads_of(9), state, leader=True)
    message = pack_positions(positions, SPECS, methods=AUTO)
    got = unpack_positions(message.data, SPECS)
    assert all(np.array_equal(a, b) for a, b in zip(positions, got, strict=True))
    # no sign bits: at most the gap code, well under the 10 bits of an AdaComp fc word
    assert 8 * sum(message.coded_bytes) < 10 * sum(p.size for p in positions)
    assert unpack_positions(pack_positions([], SPECS, methods=AUTO, void=True).data, SPECS) is None
    empty = [np.zeros(0, np.int64), np.zeros(0, np.int64)]
    assert [
        p.size for p in unpack_positions(pack_positions(empty, SPECS, methods=AUTO).data, SPECS)
    ] == [0, 0]
    corrupt = message.data.copy()
    corrupt[-1] ^= 0xFF
    for bad in (message.data[:-3], corrupt, message.data[:10]):
        with pytest.raises(PayloadError):
            unpack_positions(bad, SPECS)
    with pytest.raises(PayloadError, match="different model layout"):
        unpack_positions(message.data, SPECS[:2])


@pytest.mark.parametrize("size", [1, 2, 24, 25, 64])
def test_void_flags_name_every_voided_rank(size: int) -> None:
    rng = np.random.default_rng(size)
    voided = sorted({int(r) for r in rng.integers(0, size, 5)})
    summed = sum(void_flags(rank=r, size=size, void=r in voided) for r in range(size))
    assert voided_ranks(summed) == tuple(voided)
    assert voided_ranks(void_flags(rank=0, size=size, void=False)) == ()


def test_leader_rotates_and_the_count_is_checkpointed() -> None:
    assert [leader_for(n, 3) for n in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    state = make_state(SPECS)
    exchange = ScaleComExchange(comm=LocalCommunicator(), state=state)
    for step in range(4):
        buffer = GradientBuffer.zeros(SPECS)
        for name, grad in grads_of(step).items():
            buffer.views[name][...] = grad
        traffic = exchange.average(buffer, dense=step == 0)
        assert traffic.applied
    assert state.exchanges == 4
    restored = make_state(SPECS)
    restored.load_state_dict(state.state_dict())
    assert restored.exchanges == 4
    assert all(np.array_equal(a, b) for a, b in zip(state.residues, restored.residues, strict=True))


def test_a_world_of_one_sends_each_selected_value_once() -> None:
    state = warmed_state()
    before = [r.copy() for r in state.residues]
    grads = grads_of(11)
    buffer = GradientBuffer.zeros(SPECS)
    for name, grad in grads.items():
        buffer.views[name][...] = grad
    traffic = ScaleComExchange(comm=LocalCommunicator(), state=state).average(buffer)
    for index in (0, 1):
        accumulated = before[index] + grads[SPECS[index].name]
        assert np.array_equal(buffer.views[SPECS[index].name] + state.residues[index], accumulated)
    assert np.array_equal(buffer.views["bias"], grads["bias"])
    sent = sum(int((buffer.views[s.name] != 0).sum()) for s in SPECS[:2])
    # values, the dense bias and one flag element; the lone rank also "sends" its index message
    assert traffic.received == 4 * (sent + 9 + 1)
    assert traffic.sizes[0] > traffic.received


# -- the exchange and whole runs under mpiexec -----------------------------------


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_exchange_under_mpiexec(ranks: int) -> None:
    result = run_program(ranks, "scalecom_check.py", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK on {ranks} ranks" in result.stdout


def summary_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def steps_of(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "step"]


def train(ranks: int, out: Path, *extra: str) -> Any:
    args = [*train_command(), "--compression", "scalecom", "--output-dir", str(out)]
    args += ["--epochs", "2", "--stall-timeout", "60", "--keep-checkpoints", "10", *extra]
    return run_mpi(ranks, args, cwd=out.parent, timeout=240, env={"OMP_NUM_THREADS": "1"})


@pytest.mark.mpi
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("ranks", "rule", "beta"), [(2, "fixed", "0.5"), (3, "fixed", "0.5"), (3, "adaptive", "1")]
)
def test_training_keeps_replicas_identical_and_resumes_bit_identically(
    ranks: int, rule: str, beta: str, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    options = (
        "--checkpoint-every",
        "20",
        "--dense-warmup-steps",
        "2",
        "--scalecom-selection",
        rule,
        "--scalecom-beta",
        beta,
    )
    result = train(ranks, reference, *options)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(reference)
    assert summary["params_identical"] is True
    assert summary["compression"] == "scalecom"
    assert summary["compression_ratio"] > 20
    records = steps_of(reference)
    compressed = records[2:]
    if rule == "fixed":  # the same bytes per rank at every compressed step
        assert len({r["bytes_received_per_rank"] for r in compressed}) == 1
        assert len({r["bytes_sent_max_rank"] for r in compressed}) == 1
    # every rank sends its values, the leader also the index message
    assert all(r["bytes_sent_max_rank"] < r["dense_bytes"] / ranks / 10 for r in compressed)
    assert all(r["bytes_received_per_rank"] < r["bytes_sent"] for r in compressed)
    resumed = tmp_path / "resumed"
    shutil.copytree(reference / "checkpoints", resumed / "checkpoints")
    start = resumed / "checkpoints" / "step-00000020"
    result = train(ranks, resumed, *options, "--resume", str(start))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from" in result.stdout
    got = summary_of(resumed)
    assert got["param_digest"] == summary["param_digest"]
    assert got["params_identical"] is True
    assert got["bytes_sent"] == summary["bytes_sent"]
    before = {r["step"]: (r["loss"], r["bytes_sent"]) for r in records}
    after = steps_of(resumed)
    assert [r["step"] for r in after] == list(range(21, summary["steps"] + 1))
    assert all((r["loss"], r["bytes_sent"]) == before[r["step"]] for r in after)


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_a_nonfinite_rank_voids_the_step_everywhere(tmp_path: Path) -> None:
    """One poisoned training sample: its rank's loss is not finite at one step
    per epoch; every rank skips exactly those steps and stays identical."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 2, (5, 64))
    labels = rng.integers(0, 5, 390)
    x = (centres[labels] + rng.normal(0, 1, (390, 64))).astype(np.float32)
    x[17] = np.finfo(np.float32).max
    data = tmp_path / "poisoned.npz"
    np.savez(data, x_train=x[:300], y_train=labels[:300], x_test=x[300:], y_test=labels[300:])
    out = tmp_path / "run"
    result = train(3, out, "--dataset", "npz", "--data-path", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = summary_of(out)
    assert summary["skipped_steps"] == 2
    assert summary["params_identical"] is True
    assert np.isfinite(summary["test_loss"])
    assert result.stdout.count("non-finite gradient or loss on rank(s) [") == 2
