"""Model zoo: registry, forward/backward shapes on tiny inputs, standard layer types."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mpi_util import run_mpi, train_command
from torch import nn

from adacomp_mpi import models
from adacomp_mpi.codec.specs import CompressionPolicy
from adacomp_mpi.datasets import load_dataset
from adacomp_mpi.train.layers import gradient_specs

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


# ---------------------------------------------------------------- transformer

LM_TINY = ModelInputs((16,), 30, "language_model")
TINY_OPTIONS = {"layers": "2", "width": "32", "heads": "2"}


def test_transformer_is_a_language_model() -> None:
    assert MODELS["transformer"].tasks == ("language_model",)
    with pytest.raises(ValueError, match="cannot train"):
        build_model("transformer", ModelInputs((16,), 30, "classify"))


def test_transformer_default_size_trains_on_cpus() -> None:
    """4 layers of width 128 over Shakespeare's ~84 byte values: about 0.8 M parameters."""
    model = build_model("transformer", ModelInputs((64,), 84, "language_model"))
    assert 750_000 < _parameters(model) < 900_000


def test_transformer_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("transformer", LM_TINY, TINY_OPTIONS)
    logits = model(torch.randint(0, 30, (3, 16)))
    assert logits.shape == (3, 16, 30) and logits.dtype == torch.float32
    logits.logsumexp(-1).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, pname
    # Shorter sequences than the context are fine (positions are 0..T-1).
    assert model(torch.randint(0, 30, (2, 5))).shape == (2, 5, 30)


def test_transformer_is_causal() -> None:
    """Changing token t changes no logit at positions before t."""
    torch.manual_seed(0)
    model = build_model("transformer", LM_TINY, TINY_OPTIONS).eval()
    tokens = torch.randint(0, 30, (2, 16))
    changed = tokens.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % 30
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_transformer_parameter_kinds() -> None:
    """Matrices in Linear compress as FC, embeddings as embeddings; vectors go dense;
    every parameter is listed exactly once (the head is not tied)."""
    model = build_model("transformer", LM_TINY, TINY_OPTIONS)
    specs, params = gradient_specs(model, CompressionPolicy())
    assert len(params) == len(list(model.parameters()))
    kinds = {spec.name: spec.kind for spec in specs}
    assert kinds["tokens.weight"] == kinds["positions.weight"] == "embedding"
    for name in ("attn.qkv.weight", "attn.proj.weight", "mlp.0.weight", "mlp.2.weight"):
        assert kinds[f"blocks.0.{name}"] == kinds[f"blocks.1.{name}"] == "fc", name
    assert kinds["head.weight"] == "fc"
    for spec, param in zip(specs, params, strict=True):
        assert (spec.kind == "other") == (param.dim() == 1), spec.name
        if param.dim() == 1:
            assert not spec.compress, spec.name
    owners = [m for m in model.modules() if list(m.parameters(recurse=False))]
    assert all(isinstance(m, (*STANDARD_LAYERS, nn.LayerNorm)) for m in owners), owners


@pytest.mark.parametrize(
    ("inputs", "options", "match"),
    [
        (LM_TINY, {"width": "30", "heads": "4"}, "width 30 is not a multiple of heads 4"),
        (LM_TINY, {"dropout": "1.0"}, r"dropout must be in \[0, 1\)"),
        (LM_TINY, {"context": "8"}, "context 8 is shorter than the data's 16-token windows"),
        (LM_TINY, {"depth": "2"}, "model 'transformer' has no option 'depth'"),
        (ModelInputs((4, 4), 30, "language_model"), {}, "transformer needs"),
    ],
)
def test_transformer_bad_options(inputs: ModelInputs, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("transformer", inputs, options)


def small_text(size: int, seed: int = 0) -> bytes:
    """Verse-like text from a few words: structured enough to learn in a few steps."""
    words = ("to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler")
    rng = random.Random(seed)
    lines = []
    while sum(len(line) for line in lines) < size:
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 8))) + ",\n")
    return "".join(lines).encode()[:size]


def test_the_transformer_trains_a_few_steps_on_a_small_text() -> None:
    torch.manual_seed(0)
    raw = torch.tensor(list(small_text(4_000)))
    vocab, tokens = torch.unique(raw, return_inverse=True)
    x = tokens[: 32 * 16].reshape(16, 32)
    y = tokens[1 : 32 * 16 + 1].reshape(16, 32)
    inputs = ModelInputs((32,), len(vocab), "language_model")
    model = build_model("transformer", inputs, {"layers": "2", "width": "64"})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.mpi
def test_transformer_trains_end_to_end_on_a_small_shakespeare(tmp_path: Path) -> None:
    """The real CLI: 2 ranks, AdaComp, a one-block transformer; replicas stay identical."""
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "verse_gut.txt").write_bytes(small_text(20_000))  # the loader reads *_gut.txt
    options = ["layers=1", "width=32", "heads=2"]
    result = run_mpi(
        2,
        [
            *train_command(),
            *("--model", "transformer", "--dataset", "shakespeare"),
            *("--data-path", str(texts), "--epochs", "1"),
            *[arg for option in options for arg in ("--model-option", option)],
            *("--output-dir", str(tmp_path / "run")),
        ],
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["params_identical"] is True
    assert summary["model"] == "transformer" and summary["compression"] == "adacomp"
    assert summary["steps"] > 0 and summary["compression_ratio"] > 1
