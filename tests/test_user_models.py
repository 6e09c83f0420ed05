"""The user's own model: ``--model PATH.py:FUNCTION`` and ``--model package.module:FUNCTION``.

Real MPI runs check that such a model trains with identical replicas; the
in-process tests check that every way the user's code can fail is one line
naming the file or module, the function and the error.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from mpi_util import run_mpi, train_command
from torch import nn

from adacomp_mpi import models
from adacomp_mpi.cli.main import main

# See tests/test_models.py for why the models package is imported this way.
ModelInputs, build_model, user_model_digest = (
    models.ModelInputs,
    models.build_model,
    models.user_model_digest,
)
REPO = Path(__file__).resolve().parents[1]
DIGITS = ModelInputs((64,), 10)

MLP_SOURCE = '''
from torch import nn


def build(inputs, hidden="32"):
    """An MLP for flat inputs; ``hidden`` arrives as the string given on the CLI."""
    width = int(hidden)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs.input_shape[0], width),
        nn.ReLU(),
        nn.Linear(width, inputs.num_classes),
    )
'''


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def write_package(root: Path) -> str:
    """``userpkg.nets:build`` under ``root`` (to be put on PYTHONPATH)."""
    write(root / "userpkg" / "__init__.py", "")
    write(root / "userpkg" / "nets.py", MLP_SOURCE)
    return "userpkg.nets:build"


# ---------------------------------------------------------------- real MPI runs


def train(ranks: int, tmp_path: Path, model: str, *args: str, env: dict | None = None):
    return run_mpi(
        ranks,
        [
            *train_command(),
            *("--model", model, "--dataset", "digits", "--epochs", "1"),
            *("--output-dir", str(tmp_path / "run"), *args),
        ],
        cwd=tmp_path,
        env=env,
        timeout=180,
    )


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("source", ["file", "module"])
def test_a_user_model_trains_with_identical_replicas(
    ranks: int, source: str, tmp_path: Path
) -> None:
    if source == "file":
        write(tmp_path / "my_net.py", MLP_SOURCE)
        spec, env = "my_net.py:build", None  # relative to the run's directory
    else:
        spec = write_package(tmp_path / "lib")
        path = os.pathsep.join(filter(None, [str(tmp_path / "lib"), os.environ.get("PYTHONPATH")]))
        env = {"PYTHONPATH": path}
    result = train(ranks, tmp_path, spec, "--model-option", "hidden=48", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["params_identical"] is True
    assert summary["world_size"] == ranks and summary["model"] == spec
    assert summary["parameters"] == 64 * 48 + 48 + 48 * 10 + 10  # the option reached build()
    assert summary["test_accuracy"] > 0.3


@pytest.mark.mpi
def test_an_error_in_the_users_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    write(tmp_path / "broken.py", "import torch\n\ndef build(inputs:\n    pass\n")
    result = train(3, tmp_path, "broken.py:build")
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("adacomp-train: error: model file broken.py: SyntaxError: ")
    assert "(line 3)" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


# ---------------------------------------------------------------- in-process


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path`` (user files are named relative to it) with no ADACOMP_*."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ADACOMP_") or name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"):
            monkeypatch.delenv(name)
    return tmp_path


def test_a_model_from_a_file(in_tmp: Path) -> None:
    write(in_tmp / "my_net.py", MLP_SOURCE)
    model = build_model("my_net.py:build", DIGITS, {"hidden": "7"})
    assert model(torch.zeros(3, 64)).shape == (3, 10)
    assert model[1].out_features == 7


def test_a_model_from_a_module_path(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_package(in_tmp / "lib")
    monkeypatch.syspath_prepend(str(in_tmp / "lib"))
    assert build_model(spec, DIGITS)(torch.zeros(2, 64)).shape == (2, 10)


def test_the_function_gets_inputs_and_string_options(in_tmp: Path) -> None:
    write(
        in_tmp / "probe.py",
        """
        from torch import nn

        def build(inputs, **options):
            model = nn.Linear(1, 1)
            model.seen = (inputs, options)
            return model
        """,
    )
    inputs = ModelInputs((16,), 30, "language_model")
    model = build_model("probe.py:build", inputs, {"width": "64", "tied": "true"})
    assert model.seen == (inputs, {"width": "64", "tied": "true"})


def test_the_example_model_builds(in_tmp: Path) -> None:
    spec = f"{REPO / 'scripts' / 'examples' / 'my_model.py'}:build"
    model = build_model(spec, DIGITS, {"hidden": "16,8"})
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [16, 8, 10]
    with pytest.raises(ValueError, match=r"build\(\) raised ValueError: unknown option"):
        build_model(spec, DIGITS, {"width": "3"})


BROKEN_FILES = {
    "syntax": (
        "def build(inputs:\n    pass\n",
        "build",
        r"model file bad\.py: SyntaxError: .* \(line 1\)$",
    ),
    "import": (
        "import no_such_package_xyz\n",
        "build",
        r"model file bad\.py: ModuleNotFoundError: No module named 'no_such_package_xyz'$",
    ),
    "error at import": (
        "raise RuntimeError('config missing\\nmore detail')\n",
        "build",
        r"model file bad\.py: RuntimeError: config missing$",
    ),
    "missing function": ("def make(inputs):\n    pass\n", "build", r"no function 'build'$"),
    "not callable": ("build = 3\n", "build", r"'build' is not callable \(type int\)$"),
    "raises": (
        "def build(inputs):\n    raise KeyError('width')\n",
        "build",
        r"model file bad\.py: build\(\) raised KeyError: 'width'$",
    ),
    "wrong signature": (
        "def build():\n    pass\n",
        "build",
        r"build\(\) raised TypeError: build\(\) takes 0 positional arguments but 1 was given$",
    ),
    "not a module": (
        "def build(inputs):\n    return [1, 2]\n",
        "build",
        r"model file bad\.py: build\(\) returned list, not a torch\.nn\.Module$",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_errors_in_the_users_file_are_one_clear_line(case: str, in_tmp: Path) -> None:
    source, function, match = BROKEN_FILES[case]
    write(in_tmp / "bad.py", source)
    with pytest.raises(ValueError, match=match) as caught:
        build_model(f"bad.py:{function}", DIGITS)
    assert "\n" not in str(caught.value)
    # No chained traceback from the user's code behind the one line.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("absent.py:build", r"^model file absent\.py: FileNotFoundError: no such file$"),
        ("no_such_pkg_xyz.nets:build", r"^model module no_such_pkg_xyz\.nets: ModuleNotFound"),
        ("json:loads", r"^model module json: loads\(\) raised TypeError: "),
        ("my_net.py:", r"expected PATH\.py:FUNCTION or package\.module:FUNCTION"),
        (":build", r"expected PATH\.py:FUNCTION or package\.module:FUNCTION"),
    ],
)
def test_bad_user_model_specs(spec: str, match: str, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(spec, DIGITS)


def test_a_missing_file_is_a_usage_error_while_parsing(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--model", "missing_net.py:build", "--dataset", "digits", "--epochs", "1"])
    out, err = capsys.readouterr()
    assert (done.value.code, out, len(err.splitlines())) == (2, "", 1), err
    assert err.startswith("adacomp-train: error: ") and "model file missing_net.py not found" in err


def test_the_digest_follows_the_file(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(in_tmp / "my_net.py", MLP_SOURCE)
    digest = user_model_digest("my_net.py:build")
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text(MLP_SOURCE + "\n# changed\n")
    assert user_model_digest("my_net.py:build") not in (None, digest)
    assert user_model_digest("transformer") is None
    spec = write_package(in_tmp / "lib")
    monkeypatch.syspath_prepend(str(in_tmp / "lib"))
    module_file = in_tmp / "lib" / "userpkg" / "nets.py"
    assert user_model_digest(spec) == hashlib.sha256(module_file.read_bytes()).hexdigest()
