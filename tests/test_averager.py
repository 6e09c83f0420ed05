"""GradientAverager: the API for a user's own training loop.

In-process on a world of one (and on a faked world of two where what another
rank sent matters), then the example script for real under mpiexec.
"""

from __future__ import annotations

import io
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mpi_util import run_mpi
from torch import nn

from adacomp_mpi.codec import encode_void, make_state
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.train.averager import GradientAverager

EXAMPLE = Path(__file__).resolve().parents[1] / "scripts" / "examples" / "own_training_loop.py"


class RecordingComm(LocalCommunicator):
    """A world of one that remembers the size of every payload it carried."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def allgatherv(self, payload: np.ndarray) -> list[np.ndarray]:
        self.sizes.append(payload.size)
        return [payload]


class FakePeerComm(LocalCommunicator):
    """Rank 0 of a world of two whose peer sends ``peer_payload`` (void by
    default) and answers ``allgather_object`` with ``peer_object``."""

    size = 2

    def __init__(self, peer_object: Any = "same", peer_payload: np.ndarray | None = None) -> None:
        self.peer_object, self.peer_payload = peer_object, peer_payload

    def allgather_object(self, value: Any) -> list[Any]:
        return [value, value if self.peer_object == "same" else self.peer_object]

    def allgatherv(self, payload: np.ndarray) -> list[np.ndarray]:
        return [payload, self.peer_payload]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5)
    )


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 20, generator=generator), torch.randint(0, 5, (16,), generator=generator)


def _backward(model: nn.Module, step: int) -> None:
    inputs, targets = _batch(step)
    nn.functional.cross_entropy(model(inputs), targets).backward()


def _grads(model: nn.Module) -> list[np.ndarray]:
    return [p.grad.detach().reshape(-1).numpy().copy() for p in model.parameters()]


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _residues(averager: GradientAverager) -> list[np.ndarray]:
    residues = averager.state_dict()["residues"]
    return [residues[spec.name].numpy() for spec in averager.specs]


def _grads_are_one_flat_buffer(model: nn.Module) -> bool:
    params = list(model.parameters())
    return all(
        b.grad.data_ptr() == a.grad.data_ptr() + 4 * a.numel()
        for a, b in itertools.pairwise(params)
    )


def _train(model: nn.Module, averager: GradientAverager, optimizer, steps: range, *, zero) -> None:
    for step in steps:
        zero()
        _backward(model, step)
        if averager.synchronize():
            optimizer.step()


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_dense_mean_on_one_rank_is_the_gradient_itself() -> None:
    model = _model()
    averager = GradientAverager(model, comm=LocalCommunicator(), compression="none")
    _backward(model, 0)
    before = _grads(model)
    assert averager.synchronize()
    for got, want in zip(_grads(model), before, strict=True):
        np.testing.assert_array_equal(got, want)
    assert _grads_are_one_flat_buffer(model)
    assert averager.compression_ratio == 1.0


def test_adacomp_sends_the_gradient_less_what_stays_in_the_residue() -> None:
    """Error feedback on one rank: mean + new residue = gradient + old residue."""
    model = _model()
    averager = GradientAverager(model, comm=LocalCommunicator())
    compressed = [spec.compress for spec in averager.specs]
    assert compressed == [True, False, True, False, False, False]  # 30x5 is under dense_below
    residue = _residues(averager)
    for step in range(3):
        averager.zero_grad()
        _backward(model, step)
        gradient = _grads(model)
        assert averager.synchronize()
        sent, new_residue = _grads(model), _residues(averager)
        for g, s, old, new, squeezed in zip(
            gradient, sent, residue, new_residue, compressed, strict=True
        ):
            if squeezed:
                np.testing.assert_allclose(s + new, g + old, rtol=1e-6, atol=1e-7)
                assert 0 < np.count_nonzero(s) < s.size / 4
            else:
                np.testing.assert_array_equal(s, g)
                assert new.size == 0
        residue = new_residue


def test_counters_add_up_to_what_crossed_the_network() -> None:
    comm = RecordingComm()
    model = _model()
    averager = GradientAverager(model, comm=comm)
    assert averager.compression_ratio is None and averager.steps == 0
    _train(model, averager, _sgd(model), range(5), zero=averager.zero_grad)
    averager.synchronize(dense=True)  # a warm-up step counts too
    numel = sum(p.numel() for p in model.parameters())
    assert averager.steps == len(comm.sizes) == 6 and averager.skipped_steps == 0
    assert averager.bytes_sent == sum(comm.sizes)
    assert comm.sizes[-1] > 4 * numel  # the dense step: every float plus headers
    assert averager.dense_bytes == 6 * 4 * numel
    assert averager.compression_ratio == averager.dense_bytes / averager.bytes_sent


def test_optimizer_zero_grad_setting_grads_to_none_is_handled() -> None:
    """torch's default zero_grad(set_to_none=True) drops the views; the result
    must be bit-identical to averager.zero_grad(), and the views come back."""
    runs = []
    for use_averager in (True, False):
        model = _model()
        averager = GradientAverager(model, comm=LocalCommunicator())
        optimizer = _sgd(model)
        zero = averager.zero_grad if use_averager else optimizer.zero_grad
        _train(model, averager, optimizer, range(6), zero=zero)
        assert _grads_are_one_flat_buffer(model)
        runs.append((_params(model), _residues(averager)))
    for a, b in zip(*(params for params, _ in runs), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(*(residues for _, residues in runs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_grad_left_none_becomes_zero_not_last_steps_mean() -> None:
    model = _model()
    averager = GradientAverager(model, comm=LocalCommunicator(), compression="none")
    _backward(model, 0)
    averager.synchronize()  # the buffer now holds non-zero gradients everywhere
    for param in model.parameters():
        param.grad = None
    model[0](_batch(1)[0]).sum().backward()  # reaches only the first layer
    replaced = [p.grad.clone() for p in model[0].parameters()]
    assert averager.synchronize()
    assert all(torch.equal(p.grad, r) for p, r in zip(model[0].parameters(), replaced, strict=True))
    assert all(not p.grad.any() for p in [*model[2].parameters(), *model[4].parameters()])
    assert _grads_are_one_flat_buffer(model)


@pytest.mark.parametrize("compression", ["adacomp", "none"])
def test_a_non_finite_gradient_skips_the_step_and_loses_nothing(compression: str) -> None:
    model = _model()
    averager = GradientAverager(model, comm=LocalCommunicator(), compression=compression)
    optimizer = _sgd(model)
    _train(model, averager, optimizer, range(2), zero=averager.zero_grad)
    params, residues = _params(model), _residues(averager)
    averager.zero_grad()
    _backward(model, 2)
    next(model.parameters()).grad[0, 0] = float("nan")
    if averager.synchronize():
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(_params(model), params, strict=True))
    assert all(not p.grad.any() for p in model.parameters())
    for a, b in zip(_residues(averager), residues, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (averager.steps, averager.skipped_steps) == (3, 1)
    _train(model, averager, optimizer, range(3, 4), zero=averager.zero_grad)
    assert not torch.equal(next(model.parameters()), params[0])


def test_when_another_rank_voids_the_step_this_rank_keeps_what_it_would_have_sent() -> None:
    model = _model()
    comm = FakePeerComm()
    averager = GradientAverager(model, comm=comm)
    comm.peer_payload = encode_void(make_state(averager.specs))
    _backward(model, 0)
    gradient = _grads(model)
    assert not averager.synchronize()
    for spec, g, residue in zip(averager.specs, gradient, _residues(averager), strict=True):
        if spec.compress:  # the residue holds the whole gradient: nothing was lost
            np.testing.assert_allclose(residue, g, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_continues_bit_identically() -> None:
    model = _model()
    averager = GradientAverager(model, comm=LocalCommunicator())
    optimizer = _sgd(model)
    _train(model, averager, optimizer, range(4), zero=averager.zero_grad)
    stream = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optim": optimizer.state_dict(),
            "avg": averager.state_dict(),
        },
        stream,
    )
    runs = {}
    for name, restore_averager in (("resumed", True), ("without residues", False)):
        stream.seek(0)
        saved = torch.load(stream, weights_only=True)
        twin = _model(seed=99)
        twin_averager = GradientAverager(twin, comm=LocalCommunicator())
        twin.load_state_dict(saved["model"])
        twin_optimizer = _sgd(twin)
        twin_optimizer.load_state_dict(saved["optim"])
        if restore_averager:
            twin_averager.load_state_dict(saved["avg"])
            assert twin_averager.state_dict().keys() == averager.state_dict().keys()
            assert twin_averager.bytes_sent == averager.bytes_sent and twin_averager.steps == 4
        _train(twin, twin_averager, twin_optimizer, range(4, 8), zero=twin_averager.zero_grad)
        runs[name] = (twin, twin_averager)
    _train(model, averager, optimizer, range(4, 8), zero=averager.zero_grad)
    resumed, resumed_averager = runs["resumed"]
    assert all(torch.equal(a, b) for a, b in zip(_params(model), _params(resumed), strict=True))
    for name in ("bytes_sent", "dense_bytes", "steps", "skipped_steps"):
        assert getattr(resumed_averager, name) == getattr(averager, name)
    dropped, _ = runs["without residues"]
    assert not all(torch.equal(a, b) for a, b in zip(_params(model), _params(dropped), strict=True))


def test_load_state_dict_rejects_another_layout_and_changes_nothing() -> None:
    model = _model()
    averager = GradientAverager(model, comm=LocalCommunicator())
    _train(model, averager, _sgd(model), range(2), zero=averager.zero_grad)
    good, residues = averager.state_dict(), _residues(averager)
    other = GradientAverager(nn.Linear(20, 30), comm=LocalCommunicator()).state_dict()
    wrong_shape = {**good, "residues": {**good["residues"], "0.weight": torch.zeros(3)}}
    broken = [
        other,
        wrong_shape,
        {**good, "compression": "none"},
        {**good, "steps": -1},
        {"residues": good["residues"]},
    ]
    for saved in broken:
        with pytest.raises(ValueError):
            averager.load_state_dict(saved)
    for a, b in zip(_residues(averager), residues, strict=True):
        np.testing.assert_array_equal(a, b)
    assert averager.steps == 2


def test_bare_parameters_are_named_by_position_and_kinded_by_shape() -> None:
    model = _model()
    params = list(model.parameters())
    params[2].requires_grad_(False)  # frozen: left out, its position name unused
    averager = GradientAverager(params, comm=LocalCommunicator(), bin_sizes={"4": 64})
    assert [(s.name, s.kind) for s in averager.specs] == [
        ("0", "fc"),
        ("1", "other"),
        ("3", "other"),
        ("4", "fc"),
        ("5", "other"),
    ]
    assert averager.specs[3].bin_size == 64
    model[0](_batch(0)[0]).sum().backward()
    assert averager.synchronize()


def test_bad_options_fail_with_a_value_error() -> None:
    comm = LocalCommunicator()
    with pytest.raises(ValueError, match="compression"):
        GradientAverager(_model(), comm=comm, compression="zip")
    with pytest.raises(ValueError, match="bin_sizes"):
        GradientAverager(_model(), comm=comm, bin_sizes={"4.wieght": 10})
    with pytest.raises(ValueError, match="float32"):
        GradientAverager(_model().double(), comm=comm)
    with pytest.raises(ValueError, match="scale rule"):
        GradientAverager(_model(), comm=comm, scale_rule="median")
    with pytest.raises(ValueError, match="nothing to average"):
        GradientAverager([], comm=comm)


def test_every_rank_fails_when_one_rank_has_another_layout_or_failed() -> None:
    with pytest.raises(ValueError, match="another model layout"):
        GradientAverager(_model(), comm=FakePeerComm(peer_object=(None, ("other",))))
    with pytest.raises(ValueError, match="rank 1: bad options"):
        GradientAverager(_model(), comm=FakePeerComm(peer_object=("bad options", None)))


# --- the example script, for real ----------------------------------------------------------


def _check_example_output(output: str, ranks: int) -> None:
    assert f"ranks: {ranks}" in output, output
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", output).group(1))
    ratio = float(re.search(r"compression ratio: ([0-9.]+)x", output).group(1))
    assert accuracy > 0.5, output  # chance is 0.1 (ten classes)
    assert ratio > 10, output
    assert "replicas identical: True" in output, output
    assert output.count("test accuracy") == 1, output  # rank 0 alone prints


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_the_example_trains_under_mpiexec(ranks: int) -> None:
    done = run_mpi(ranks, [sys.executable, str(EXAMPLE)], timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    _check_example_output(done.stdout, ranks)


def test_the_example_runs_as_one_process_without_mpiexec() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "3"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _check_example_output(done.stdout, 1)
