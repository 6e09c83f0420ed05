"""The trainer's optimizers are torch's fused steps where torch has them, and
follow the default per-tensor loop's trajectory up to rounding."""

from __future__ import annotations

import pytest
import torch

from adacomp_mpi.train.optim import OPTIMIZERS, OptimizerSettings

SETTINGS = OptimizerSettings(lr=0.05, momentum=0.9, weight_decay=1e-4)


def _params(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(64, 32), (64,), (10, 64), (10,)]
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator)) for shape in shapes]


def _trajectory(optimizer_for) -> list[torch.Tensor]:
    params = _params(0)
    optimizer = optimizer_for(params)
    generator = torch.Generator().manual_seed(1)
    for step in range(6):
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator)
        for group in optimizer.param_groups:  # as the trainer's schedule does
            group["lr"] = SETTINGS.lr * (1.0 - step / 10)
        optimizer.step()
    return [param.detach().clone() for param in params]


PLAIN = {
    "sgd": lambda params: torch.optim.SGD(
        params, lr=SETTINGS.lr, momentum=SETTINGS.momentum, weight_decay=SETTINGS.weight_decay
    ),
    "adam": lambda params: torch.optim.Adam(
        params, lr=SETTINGS.lr, betas=(SETTINGS.momentum, 0.999), weight_decay=SETTINGS.weight_decay
    ),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_optimizers_on_the_cpu_are_fused(name: str) -> None:
    optimizer = OPTIMIZERS[name](_params(0), SETTINGS)
    assert optimizer.param_groups[0]["fused"] is True


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_the_fused_step_follows_the_default_loop(name: str) -> None:
    fused = _trajectory(lambda params: OPTIMIZERS[name](params, SETTINGS))
    plain = _trajectory(PLAIN[name])
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused[0], _params(0)[0])  # the steps moved the parameters


def test_a_multiple_of_the_vector_width_is_bit_identical_to_the_default_loop() -> None:
    """Only a tensor's last, partial vector may round differently."""
    fused = _trajectory(lambda params: OPTIMIZERS["sgd"](params, SETTINGS))
    plain = _trajectory(PLAIN["sgd"])
    assert torch.equal(fused[0], plain[0]) and torch.equal(fused[1], plain[1])  # 2048 and 64


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_parameters_torch_cannot_fuse_get_the_default_loop(name: str) -> None:
    params = [torch.nn.Parameter(torch.zeros(4, dtype=torch.complex64))]
    optimizer = OPTIMIZERS[name](params, SETTINGS)
    assert not optimizer.param_groups[0]["fused"]
