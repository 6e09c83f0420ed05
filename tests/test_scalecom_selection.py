"""--compression scalecom --scalecom-selection fixed: the top M per bin, its
ties, its fixed-size index message, bytes per rank that do not move with the
steps or with N (mpiexec -n 2 and -n 3), and the options that set it."""

from __future__ import annotations

import dataclasses

import click
import numpy as np
import pytest
from mpi_util import run_program
from test_scalecom import AUTO, RULES, SPECS, config_of, grads_of, warmed_state

from adacomp_mpi import PayloadError, TensorSpec, make_state
from adacomp_mpi.codec.shared_indices import accumulate
from adacomp_mpi.codec.shared_selection import (
    DEFAULT_PER_BIN,
    ScaleComConfig,
    SharedSelection,
    fixed_count,
    top_per_bin,
)
from adacomp_mpi.codec.shared_wire import HEADER_BYTES, pack_positions, unpack_positions
from adacomp_mpi.dist.buffer import GradientBuffer
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.dist.scalecom import ScaleComExchange
from adacomp_mpi.train.config import TrainConfig


def reference_top(values: np.ndarray, bin_size: int, per_bin: int) -> np.ndarray:
    """Per bin, a stable sort by descending |value|: ties go to the lower position."""
    picked = []
    for start in range(0, values.size, bin_size):
        magnitude = np.abs(values[start : start + bin_size]).astype(np.float64)
        order = np.argsort(-magnitude, kind="stable")[:per_bin]
        picked += sorted(start + order)
    return np.array(picked, np.int64)


@pytest.mark.parametrize(
    ("numel", "bin_size", "per_bin"),
    [(12_345, 500, 5), (3_001, 50, 2), (3_001, 50, 1), (40, 50, 3), (499, 500, 5), (60, 7, 9)],
)
def test_fixed_selection_keeps_the_top_m_of_every_bin(
    numel: int, bin_size: int, per_bin: int
) -> None:
    rng = np.random.default_rng(numel + per_bin)
    values = rng.standard_normal(numel).astype(np.float32)
    got = top_per_bin(values, bin_size=bin_size, per_bin=per_bin)
    assert np.array_equal(got, reference_top(values, bin_size, per_bin))
    assert got.size == fixed_count(numel, bin_size=bin_size, per_bin=per_bin)
    per_bin_counts = np.bincount(got // bin_size, minlength=-(-numel // bin_size))
    full = numel // bin_size
    assert (per_bin_counts[:full] == min(per_bin, bin_size)).all()  # exactly M per full bin
    assert per_bin_counts[full:].sum() == min(per_bin, numel - full * bin_size)
    for start in range(0, numel, bin_size):  # no unpicked element beats a picked one
        inside = (got >= start) & (got < start + bin_size)
        rest = np.setdiff1d(np.arange(start, min(start + bin_size, numel)), got[inside])
        if rest.size:
            assert np.abs(values[got[inside]]).min() >= np.abs(values[rest]).max()


def test_fixed_selection_breaks_ties_by_position() -> None:
    """Equal magnitudes (signs, zeros, repeated values): the lower positions win,
    the same every time, and the bins stay independent."""
    values = np.array([1, -1, 1, -1, 1, 0, 0, 0, 0, 0, 2, -3, 2, 2, 0, 5], np.float32)
    got = top_per_bin(values, bin_size=5, per_bin=2)
    assert got.tolist() == [0, 1, 5, 6, 10, 11, 15]
    rng = np.random.default_rng(4)
    coarse = rng.integers(-3, 4, 10_000).astype(np.float32)  # ties everywhere
    first = top_per_bin(coarse, bin_size=50, per_bin=3)
    assert np.array_equal(first, reference_top(coarse, 50, 3))
    assert np.array_equal(first, top_per_bin(coarse.copy(), bin_size=50, per_bin=3))


def test_fixed_leader_positions_are_the_top_m_of_r_plus_dw() -> None:
    state = warmed_state(config_of("fixed"))
    reference = [r.copy() for r in state.residues]
    grads = grads_of(78)
    positions = accumulate(grads, state, leader=True)
    for index, where in zip((0, 1), positions, strict=True):
        spec = SPECS[index]
        accumulated = reference[index] + grads[spec.name]
        per_bin = DEFAULT_PER_BIN[spec.kind]
        assert np.array_equal(where, reference_top(accumulated, spec.bin_size, per_bin))
    override = ScaleComConfig(shared_selection=SharedSelection("fixed", {"fc": 7, "conv": 1}))
    counts = [override.shared_selection.count_for(spec) for spec in SPECS[:2]]
    assert counts == [1, 7]
    assert (
        SharedSelection("fixed", {"fc": 7, "conv": 1, "conv.weight": 3}).count_for(
            TensorSpec("conv.weight", 100, "conv", 50)
        )
        == 3
    )  # a parameter name wins over its kind
    with pytest.raises(ValueError, match="unknown selection"):
        SharedSelection("topk")
    with pytest.raises(ValueError, match=">= 1"):
        SharedSelection("fixed", {"fc": 0})


def test_fixed_index_message_has_a_size_fixed_by_the_layout() -> None:
    """OFFSETS records: ceil(log2 L_T) bits per position, so any two steps'
    messages are the same size; a count M does not imply, or an offset
    outside its bin, is refused."""
    state = warmed_state(config_of("fixed"))
    per_bin = [DEFAULT_PER_BIN[s.kind] for s in SPECS[:2]]
    sizes = set()
    for seed in range(3):
        positions = accumulate(grads_of(100 + seed, 10.0**seed), state, leader=True)
        message = pack_positions(positions, SPECS, methods=AUTO, per_bin=per_bin)
        got = unpack_positions(message.data, SPECS)
        assert all(np.array_equal(a, b) for a, b in zip(positions, got, strict=True))
        sizes.add(message.data.size)
    counts = [
        fixed_count(s.numel, bin_size=s.bin_size, per_bin=m)
        for s, m in zip(SPECS[:2], per_bin, strict=True)
    ]
    coded = [-(-c * w // 8) for c, w in zip(counts, (6, 9), strict=True)]  # L_T 50, 500
    assert sizes == {HEADER_BYTES + sum(12 + b + (-b % 4) for b in coded)}
    short = [positions[0][:-1], positions[1]]
    with pytest.raises(PayloadError, match="implies"):
        unpack_positions(pack_positions(short, SPECS, methods=AUTO, per_bin=per_bin).data, SPECS)
    outside = [positions[0].copy(), positions[1]]
    outside[0][-1] = SPECS[0].numel  # the ragged last bin ends before that
    with pytest.raises(PayloadError, match="outside its bin"):
        unpack_positions(pack_positions(outside, SPECS, methods=AUTO, per_bin=per_bin).data, SPECS)


def test_fixed_bytes_per_step_do_not_move() -> None:
    """A world of one: every compressed step of the fixed rule reports the same
    bytes, however the gradients scale (the adaptive rule's do move)."""
    received: dict[str, set] = {rule: set() for rule in RULES}
    sent: set[int] = set()
    for rule in RULES:
        state = make_state(SPECS, config_of(rule))
        exchange = ScaleComExchange(comm=LocalCommunicator(), state=state)
        for step in range(6):
            buffer = GradientBuffer.zeros(SPECS)
            for name, grad in grads_of(step, 10.0 ** (step % 3 - 1)).items():
                buffer.views[name][...] = grad
            traffic = exchange.average(buffer)
            received[rule].add(traffic.received)
            if rule == "fixed":
                sent.add(traffic.sizes[0])
    values = sum(fixed_count(s.numel, bin_size=s.bin_size, per_bin=DEFAULT_PER_BIN[s.kind])
                 for s in SPECS[:2])  # fmt: skip
    # a lone rank receives the Allreduce vector (values, dense bias, one flag word)
    assert received["fixed"] == {4 * (values + SPECS[2].numel + 1)}
    assert len(sent) == 1 and sent.pop() > 4 * values  # and also sends the index message
    assert len(received["adaptive"]) > 1


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_fixed_bytes_per_rank_are_the_same_at_two_and_three_ranks() -> None:
    """The fixed rule's bytes per rank per step: constant over steps, and the
    same at N = 2 and 3 (the adaptive rule runs too, without that promise)."""
    printed = {}
    for ranks in (2, 3):
        result = run_program(ranks, "scalecom_bytes_check.py", timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"OK on {ranks} ranks" in result.stdout
        lines = [line.split(maxsplit=2) for line in result.stdout.splitlines()]
        printed[ranks] = {rule: rest for tag, rule, rest in (x for x in lines if len(x) == 3)
                          if tag == "BYTES"}  # fmt: skip
    assert printed[2]["fixed"] == printed[3]["fixed"]
    assert "," not in printed[2]["fixed"]  # one value each: constant over the steps


def test_the_options_reach_the_config_and_old_checkpoints_read_as_adaptive() -> None:
    from adacomp_mpi.train.checkpoint import CheckpointError
    from adacomp_mpi.train.resume import check_trajectory
    from cli.scalecom_options import PerBinType

    assert PerBinType().convert("fc=1", None, None) == ("fc", 1)
    assert PerBinType().convert(" 0.weight = 12 ", None, None) == ("0.weight", 12)
    for bad in ("fc=0", "fc", "fc=x", "=3"):
        with pytest.raises(click.BadParameter):
            PerBinType().convert(bad, None, None)
    assert TrainConfig().scalecom_selection == SharedSelection().rule  # one default
    config = TrainConfig(compression="scalecom", scalecom_selection="fixed")
    saved = {k: v for k, v in config.to_dict().items() if k != "scalecom_selection"}
    with pytest.raises(CheckpointError, match="scalecom_selection: 'adaptive' -> 'fixed'"):
        check_trajectory(saved, config)  # a checkpoint from before the option: adaptive
    check_trajectory(config.to_dict(), config)
    changed = TrainConfig(
        compression="scalecom", scalecom_selection="fixed", scalecom_per_bin={"fc": 9}
    )
    with pytest.raises(CheckpointError, match="scalecom_per_bin"):
        check_trajectory(config.to_dict(), changed)


def test_the_scalecom_defaults_change_no_resume_of_another_mode_nor_an_older_scalecom_run() -> None:
    from adacomp_mpi.train.checkpoint import CheckpointError
    from adacomp_mpi.train.resume import check_trajectory

    assert (TrainConfig().scalecom_selection, TrainConfig().scalecom_beta) == ("fixed", 0.5)
    # An AdaComp run saved under the old scalecom defaults resumes under the new ones.
    old_defaults = {"scalecom_selection": "adaptive", "scalecom_beta": 1.0}
    saved = {**TrainConfig().to_dict(), **old_defaults}
    check_trajectory(saved, TrainConfig())
    # A scalecom run saved before beta was recorded ran at beta 1: not at today's 0.5.
    scalecom = TrainConfig(compression="scalecom", scalecom_selection="adaptive")
    saved = {k: v for k, v in scalecom.to_dict().items() if k != "scalecom_beta"}
    with pytest.raises(CheckpointError, match=r"scalecom_beta: 1\.0 -> 0\.5"):
        check_trajectory(saved, scalecom)
    check_trajectory(saved, dataclasses.replace(scalecom, scalecom_beta=1.0))


def test_the_per_bin_table_is_recorded_whole_and_an_older_table_reads_as_conv_2() -> None:
    from adacomp_mpi.codec.shared_selection import DEFAULT_PER_BIN
    from adacomp_mpi.train.checkpoint import CheckpointError
    from adacomp_mpi.train.resume import check_trajectory

    assert DEFAULT_PER_BIN["conv"] == 3
    given = TrainConfig(compression="scalecom", scalecom_per_bin={"fc": 9, "0.weight": 4})
    assert given.scalecom_per_bin == {**DEFAULT_PER_BIN, "fc": 9, "0.weight": 4}
    assert dataclasses.replace(given).scalecom_per_bin == given.scalecom_per_bin
    check_trajectory(given.to_dict(), given)
    # Saved before tables were recorded whole: {} meant conv 2, so it does
    # not resume under today's conv 3, and does at an explicit conv=2.
    today = TrainConfig(compression="scalecom")
    for table in ({}, None):
        saved = today.to_dict()
        if table is None:
            del saved["scalecom_per_bin"]
        else:
            saved["scalecom_per_bin"] = table
        with pytest.raises(CheckpointError, match=r"scalecom_per_bin: \{'conv': 2"):
            check_trajectory(saved, today)
        check_trajectory(saved, TrainConfig(compression="scalecom", scalecom_per_bin={"conv": 2}))
    saved = {**today.to_dict(), "scalecom_per_bin": {"fc": 9}}
    older = TrainConfig(compression="scalecom", scalecom_per_bin={"conv": 2, "fc": 9})
    check_trajectory(saved, older)
    # An AdaComp run ignores the table either way.
    check_trajectory({**TrainConfig().to_dict(), "scalecom_per_bin": {}}, TrainConfig())


def test_a_per_bin_key_that_names_nothing_in_the_model_is_refused(tmp_path) -> None:
    import torch

    from adacomp_mpi.common.errors import UsageError
    from adacomp_mpi.train.build import build_trainer

    config = TrainConfig(
        compression="scalecom",
        scalecom_selection="fixed",
        scalecom_per_bin={"fcc": 3},
        output_dir=tmp_path,
        quiet=True,
    )
    with pytest.raises(UsageError, match=r"--scalecom-per-bin key.*'fcc'"):
        build_trainer(config, LocalCommunicator(), torch.device("cpu"))
