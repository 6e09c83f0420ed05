"""--remedy-min-bin: momentum correction and momentum compensation act only on
tensors that AdaComp bins at L_T >= N (default 100); finer ones (conv, L_T 50)
keep plain error feedback in the codec and the asked momentum and lr in the
optimizer (docs/CODEC.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adacomp_mpi import models
from adacomp_mpi.codec import CodecConfig, CompressionPolicy, TensorSpec, decode, encode, make_state
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.layers import gradient_specs

ModelInputs, build_model = models.ModelInputs, models.build_model  # as tests/test_models.py

FINE = TensorSpec("conv", 900, kind="conv", bin_size=50)
COARSE = TensorSpec("fc", 1500, kind="fc", bin_size=500)
SPECS = (FINE, COARSE)


def _steps(rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    return [
        {spec.name: rng.standard_normal(spec.numel).astype(np.float32) for spec in SPECS}
        for _ in range(4)
    ]


def test_a_finely_binned_tensor_is_encoded_as_without_correction() -> None:
    """Its velocity has m = 0 (u = g), so its records are the plain codec's, step
    after step, while the coarse tensor's are the corrected codec's."""
    steps = _steps(np.random.default_rng(3))
    split = make_state(SPECS, CodecConfig(momentum=0.9, momentum_min_bin=100))
    plain = make_state((FINE,))
    corrected = make_state((COARSE,), CodecConfig(momentum=0.9))
    for grads in steps:
        both = decode(encode(grads, split), SPECS)
        fine = decode(encode({"conv": grads["conv"]}, plain), (FINE,))
        coarse = decode(encode({"fc": grads["fc"]}, corrected), (COARSE,))
        np.testing.assert_array_equal(both["conv"], fine["conv"])
        np.testing.assert_array_equal(both["fc"], coarse["fc"])
    assert [float(m) for m in split.velocities.momenta] == [0.0, pytest.approx(0.9)]
    np.testing.assert_array_equal(split.residues[0], plain.residues[0])
    np.testing.assert_array_equal(split.residues[1], corrected.residues[0])


def test_min_bin_zero_corrects_every_tensor() -> None:
    steps = _steps(np.random.default_rng(4))
    zero = make_state(SPECS, CodecConfig(momentum=0.9, momentum_min_bin=0))
    default = make_state(SPECS, CodecConfig(momentum=0.9))
    for grads in steps:
        assert encode(grads, zero).tobytes() == encode(grads, default).tobytes()


def _groups(trainer) -> list[tuple[float, float]]:
    return [(group["momentum"], group["lr"]) for group in trainer.optimizer.param_groups]


def test_the_cnn_with_correction_keeps_conv_momentum_in_the_optimizer(tmp_path) -> None:
    common = {"model": "cnn", "dataset": "digits", "quiet": True, "lr": 0.01}
    config = TrainConfig(**common, momentum_correction=True, output_dir=tmp_path / "a")
    trainer = build_trainer(config, LocalCommunicator(), torch.device("cpu"))
    assert _groups(trainer) == [(0.0, 0.01), (0.9, 0.01)]
    conv = {id(m.weight) for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)}
    assert {id(p) for p in trainer.optimizer.param_groups[1]["params"]} == conv
    # conv: no velocity; the other compressed tensors (fc, unmasked by default):
    # the compensated 0.5; dense ones: 0.9
    expected = [
        0.0 if spec.compress and spec.bin_size < 100 else 0.5 if spec.compress else 0.9
        for spec in trainer.codec_state.specs
    ]
    momenta = [float(m) for m in trainer.codec_state.velocities.momenta]
    assert momenta == [pytest.approx(m) for m in expected]
    every = TrainConfig(
        **common, momentum_correction=True, remedy_min_bin=0, output_dir=tmp_path / "b"
    )
    assert _groups(build_trainer(every, LocalCommunicator(), "cpu")) == [(0.0, 0.01)]


INPUTS = {
    "mlp": ModelInputs((784,), 10),
    "seq_lstm": ModelInputs((29, 12), 9),
    "char_lstm": ModelInputs((64,), 65, "language_model"),
    "transformer": ModelInputs((64,), 65, "language_model"),
    "cnn": ModelInputs((1, 28, 28), 10),
}


@pytest.mark.parametrize("model", sorted(INPUTS))
def test_only_conv_weights_bin_below_100(model: str) -> None:
    """At the paper's L_T only conv weights bin below 100, so for the other
    models the min bin changes nothing: their results measured before it stand."""
    specs, _ = gradient_specs(build_model(model, INPUTS[model]), CompressionPolicy())
    fine = {spec.kind for spec in specs if spec.compress and spec.bin_size < 100}
    assert fine == ({"conv"} if model == "cnn" else set())
