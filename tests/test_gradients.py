"""The flat gradient buffer: autograd writes into it, the codec reads it, and
the dense exchange averages it in place."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from adacomp_mpi.codec.specs import CompressionPolicy, TensorSpec
from adacomp_mpi.codec.state import make_state
from adacomp_mpi.dist.buffer import GradientBuffer
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.dist.exchange import DenseExchange
from adacomp_mpi.train.gradients import GradientBridge
from adacomp_mpi.train.layers import gradient_specs


def _model_and_bridge() -> tuple[nn.Module, GradientBridge]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    specs, params = gradient_specs(model, CompressionPolicy())
    return model, GradientBridge(params, specs)


def test_autograd_accumulates_into_the_flat_buffer_the_codec_reads() -> None:
    model, bridge = _model_and_bridge()
    twin = copy.deepcopy(model)
    for param in twin.parameters():
        param.grad = None
    for _ in range(2):  # twice: the second backward accumulates in place
        x = torch.randn(8, 20)
        model(x).square().sum().backward()
        twin(x).square().sum().backward()
    buffer = bridge.to_host()
    offset = 0
    for (name, param), want in zip(model.named_parameters(), twin.parameters(), strict=True):
        np.testing.assert_array_equal(buffer.views[name], want.grad.reshape(-1).numpy())
        assert param.grad.data_ptr() == bridge.flat.data_ptr() + 4 * offset
        offset += param.numel()
    bridge.zero()
    assert not buffer.flat.any() and all(not p.grad.any() for p in model.parameters())


def test_writing_the_buffer_is_what_the_optimizer_sees() -> None:
    model, bridge = _model_and_bridge()
    bridge.to_host().flat[:] = 1.0
    bridge.from_host()
    assert all(bool((p.grad == 1).all()) for p in model.parameters())


def test_the_buffer_spots_any_non_finite_value() -> None:
    buffer = GradientBuffer.zeros([TensorSpec("a", 1000), TensorSpec("b", 10, compress=False)])
    assert buffer.is_finite()
    for bad in (np.nan, np.inf, -np.inf):
        buffer.views["b"][3] = bad
        assert not buffer.is_finite()
        buffer.views["b"][3] = 0
    buffer.views["a"][:] = 3e38  # finite, though their squares and sum overflow
    assert buffer.is_finite()


def test_a_buffer_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="1-D float32 of 10 elements"):
        GradientBuffer.over(np.zeros(9, np.float32), [TensorSpec("a", 10)])


def test_the_dense_exchange_averages_in_place_on_one_rank() -> None:
    specs = [TensorSpec("a", 1000), TensorSpec("b", 10, compress=False)]
    buffer = GradientBuffer.zeros(specs)
    buffer.flat[:] = np.arange(1010, dtype=np.float32)
    traffic = DenseExchange(comm=LocalCommunicator(), state=make_state(specs)).average(buffer)
    assert traffic.applied and traffic.sizes == (4040,)
    np.testing.assert_array_equal(buffer.flat, np.arange(1010, dtype=np.float32))
