"""Model zoo: registry, forward/backward shapes on tiny inputs, standard layer types."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from adacomp_mpi import models
from adacomp_mpi.datasets import load_dataset

# `from adacomp_mpi import models`: ruff's isort cannot see that adacomp_mpi.models
# (mapped from models/) is first-party, so a direct import would sort oddly.
MODELS, ModelInputs, build_model = models.MODELS, models.ModelInputs, models.build_model

# Layer kinds the trainer maps to an AdaComp bin length (conv: 50, FC/LSTM: 500).
STANDARD_LAYERS = (nn.Conv2d, nn.Linear, nn.LSTM, nn.Embedding)
MAX_PARAMS = 300_000  # small enough for two CPU cores

CASES = {
    "cnn-1x28x28": ("cnn", ModelInputs((1, 28, 28), 10), lambda n: torch.rand(n, 1, 28, 28)),
    "cnn-3x32x32": ("cnn", ModelInputs((3, 32, 32), 10), lambda n: torch.rand(n, 3, 32, 32)),
    "cnn-1x8x8": ("cnn", ModelInputs((1, 8, 8), 10), lambda n: torch.rand(n, 1, 8, 8)),
    "cnn-flat64": ("cnn", ModelInputs((64,), 10), lambda n: torch.rand(n, 64)),
    "char_lstm": (
        "char_lstm",
        ModelInputs((16,), 30, "language_model"),
        lambda n: torch.randint(0, 30, (n, 16)),
    ),
    "seq_lstm": ("seq_lstm", ModelInputs((29, 12), 9), lambda n: torch.randn(n, 29, 12)),
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared 2-core box they thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def expected_shape(inputs: ModelInputs, batch: int) -> tuple[int, ...]:
    if inputs.task == "language_model":
        return (batch, *inputs.input_shape, inputs.num_classes)
    return (batch, inputs.num_classes)


def test_registry_has_the_new_models() -> None:
    assert {"mlp", "cnn", "char_lstm", "seq_lstm"} <= set(MODELS)
    assert MODELS["char_lstm"].tasks == ("language_model",)
    assert MODELS["cnn"].tasks == MODELS["seq_lstm"].tasks == ("classify",)


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_backward_shapes(case: str) -> None:
    torch.manual_seed(0)
    name, inputs, make = CASES[case]
    model = build_model(name, inputs)
    logits = model(make(3))
    assert logits.shape == expected_shape(inputs, 3) and logits.dtype == torch.float32
    logits.float().logsumexp(-1).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, pname
    assert sum(p.numel() for p in model.parameters()) <= MAX_PARAMS


@pytest.mark.parametrize("case", sorted(CASES))
def test_parameters_live_in_standard_layers(case: str) -> None:
    name, inputs, _ = CASES[case]
    model = build_model(name, inputs)
    owners = [m for m in model.modules() if list(m.parameters(recurse=False))]
    assert owners and all(isinstance(m, STANDARD_LAYERS) for m in owners), owners


@pytest.mark.parametrize("case", ["cnn-1x8x8", "char_lstm", "seq_lstm"])
def test_a_few_steps_fit_a_tiny_batch(case: str) -> None:
    torch.manual_seed(0)
    name, inputs, make = CASES[case]
    model = build_model(name, inputs)
    x = make(8)
    if x.is_floating_point():
        x = (x - x.mean()) / x.std()  # zero-mean noise is easier to tell apart than 0..1 noise
    y = (
        torch.randint(0, inputs.num_classes, (8, *inputs.input_shape))
        if inputs.task == "language_model"
        else torch.arange(8) % inputs.num_classes
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_cnn_on_embedded_digits() -> None:
    data = load_dataset("digits")
    inputs = ModelInputs(data.input_shape, data.num_classes, data.task)
    logits = build_model("cnn", inputs)(torch.from_numpy(data.x_test[:5]))
    assert logits.shape == (5, 10)


@pytest.mark.parametrize(
    ("name", "inputs", "match"),
    [
        ("char_lstm", ModelInputs((16,), 30, "classify"), "cannot train"),
        ("cnn", ModelInputs((16,), 30, "language_model"), "cannot train"),
        ("cnn", ModelInputs((29, 12), 9), "cnn needs"),
        ("cnn", ModelInputs((10,), 3), "cnn needs"),
        ("seq_lstm", ModelInputs((64,), 10), "seq_lstm needs"),
        ("char_lstm", ModelInputs((4, 4), 10, "language_model"), "char_lstm needs"),
        ("resnet", ModelInputs((1, 28, 28), 10), "unknown model"),
    ],
)
def test_incompatible_inputs_are_rejected(name: str, inputs: ModelInputs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(name, inputs)


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_model_options_set_the_size() -> None:
    inputs = ModelInputs((784,), 10)
    wide = build_model("mlp", inputs, {"hidden": "2048,1024"})
    assert _parameters(wide) == 784 * 2048 + 2048 + 2048 * 1024 + 1024 + 1024 * 10 + 10
    cnn = build_model("cnn", ModelInputs((1, 28, 28), 10), {"channels": "8,16", "hidden": "32"})
    assert [m.out_channels for m in cnn if isinstance(m, torch.nn.Conv2d)] == [8, 16]
    lstm = build_model("seq_lstm", ModelInputs((29, 12), 9), {"hidden": "32", "layers": "1"})
    assert lstm(torch.zeros(2, 29, 12)).shape == (2, 9)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"width": "3"}, r"model 'mlp' has no option 'width'; its options are hidden=256,128"),
        ({"hidden": "a,b"}, r"model option hidden='a,b'"),
        ({"hidden": "0"}, r"sizes must be at least 1"),
    ],
)
def test_bad_model_options_are_one_line_errors(options: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("mlp", ModelInputs((784,), 10), options)
