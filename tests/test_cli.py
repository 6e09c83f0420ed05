"""End to end: the real ``adacomp-train`` under mpiexec, and its input validation.

The tests after the MPI ones run the CLI in-process (or the real command
without mpiexec): messages for settings that would otherwise be ignored or
misleading, each one line with its exit code.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
from pathlib import Path

import click
import pytest
from mpi_util import run_mpi, train_command

import adacomp_mpi
from adacomp_mpi.cli.env import _resolved_train_defaults
from adacomp_mpi.cli.main import main
from adacomp_mpi.cli.sources import NON_OPTION_VARIABLES, option_variables
from adacomp_mpi.cli.train import train as train_cli
from adacomp_mpi.datasets.files import DATA_DIR_ENV
from adacomp_mpi.datasets.shakespeare import MAX_BYTES_ENV

REPO = Path(__file__).resolve().parents[1]

SUMMARY_KEYS = {
    "world_size",
    "compression",
    "model",
    "dataset",
    "epochs",
    "steps",
    "test_accuracy",
    "test_loss",
    "compression_ratio",
    "bits_per_sent_element",
    "bytes_sent",
    "dense_bytes",
    "wall_seconds",
    "params_identical",
}


def train(ranks: int, tmp_path: Path, *args: str, timeout: float = 240):
    summary = tmp_path / "summary.json"
    result = run_mpi(
        ranks,
        [*train_command(), "--output-dir", str(tmp_path / "run"), "--summary", str(summary), *args],
        timeout=timeout,
        cwd=tmp_path,
    )
    return result, summary


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_training_writes_an_honest_summary(ranks: int, tmp_path: Path) -> None:
    result, path = train(ranks, tmp_path, "--epochs", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(path.read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["world_size"] == ranks
    assert summary["params_identical"] is True
    assert summary["compression"] == "adacomp"
    assert summary["steps"] == 3 * -(-(1437 // ranks) // 16)
    assert summary["dense_bytes"] == 4 * summary["parameters"] * summary["steps"] * ranks
    assert summary["compression_ratio"] == pytest.approx(
        summary["dense_bytes"] / summary["bytes_sent"]
    )
    assert summary["compression_ratio"] > 20
    assert 1 < summary["bits_per_sent_element"] < 12
    assert summary["test_accuracy"] > 0.5
    assert "done: test accuracy" in result.stdout


@pytest.mark.mpi
def test_dense_mode_and_environment_variables(tmp_path: Path) -> None:
    summary_path = tmp_path / "dense.json"
    result = run_mpi(
        2,
        train_command(),
        cwd=tmp_path,
        env={
            "ADACOMP_COMPRESSION": "none",
            "ADACOMP_EPOCHS": "2",
            "ADACOMP_SUMMARY": str(summary_path),
            "ADACOMP_OUTPUT_DIR": str(tmp_path / "dense"),
        },
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["compression"] == "none"
    assert summary["epochs"] == 2
    assert summary["compression_ratio"] == pytest.approx(1.0)
    assert summary["params_identical"] is True


def _write_garbage_digits(path: Path) -> Path:
    with gzip.open(path, "wt") as handle:
        handle.write("1,2,3\n4,5,6\n")
    return path


def _file_in_the_way(tmp_path: Path) -> Path:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    return blocker / "run"


BAD_INPUTS = {
    "negative epochs": lambda tmp: ["--epochs", "-1"],
    "bin size below 2": lambda tmp: ["--bin-size", "fc=1"],
    "malformed bin size": lambda tmp: ["--bin-size", "fc"],
    "unknown model": lambda tmp: ["--model", "resnet9000"],
    "unknown dataset": lambda tmp: ["--dataset", "imagenet"],
    "missing data path": lambda tmp: ["--data-path", str(tmp / "missing.csv.gz")],
    "malformed data file": lambda tmp: [
        "--data-path",
        str(_write_garbage_digits(tmp / "bad.csv.gz")),
    ],
    "unwritable output dir": lambda tmp: ["--output-dir", str(_file_in_the_way(tmp))],
}


@pytest.mark.mpi
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2_on_every_rank(case: str, tmp_path: Path) -> None:
    args = BAD_INPUTS[case](tmp_path)
    # The case's options come last, so they override the short --epochs.
    result = run_mpi(3, [*train_command(), "--epochs", "1", *args], cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("adacomp-train: error: ")
    assert "Traceback" not in result.stdout + result.stderr


# ---------------------------------------------------------------- in-process


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ADACOMP_* from the shell running the tests, and no launcher rank."""
    for name in list(os.environ):
        if name.startswith("ADACOMP_") or name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"):
            monkeypatch.delenv(name)
    return monkeypatch


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``adacomp-train ARGS`` run in this process
    (returning from ``main`` is exit code 0, as for the console script)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The single ``adacomp-train: error:`` line of a run that must exit 2."""
    code, out, err = run_cli(capsys, *args)
    lines = err.splitlines()
    assert (code, out, len(lines)) == (2, "", 1), (code, out, err)
    assert lines[0].startswith("adacomp-train: error: ")
    return lines[0].removeprefix("adacomp-train: error: ")


def resolve(*args: str) -> dict:
    """The options ``train`` would run with, without starting a run."""
    with train_cli.make_context("train", list(args)) as ctx:
        return dict(ctx.params)


def test_version_prints_name_and_version(capsys, clean_env) -> None:
    assert run_cli(capsys, "--version") == (0, f"adacomp-train {adacomp_mpi.__version__}\n", "")
    assert adacomp_mpi.__version__ == "0.1.0"


def test_version_of_the_installed_command() -> None:
    result = subprocess.run(
        [*train_command(), "--version"], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "adacomp-train 0.1.0\n", "")


def test_group_help_still_lists_version_and_options_still_mean_train(capsys, clean_env) -> None:
    code, out, _ = run_cli(capsys, "-h")
    assert code == 0 and "--version" in out and "Commands:" in out
    assert one_error(capsys, "--epochs", "0").startswith("Invalid value for '--epochs': ")


def test_an_env_var_naming_no_option_is_refused_with_the_real_name(capsys, clean_env) -> None:
    clean_env.setenv("ADACOMP_BIN_SIZE", "conv=50 fc=400")
    assert one_error(capsys) == (
        "unknown environment variable ADACOMP_BIN_SIZE (did you mean ADACOMP_BIN_SIZES?): "
        "no option of 'adacomp-train train' reads it; rename or unset it"
    )
    clean_env.setenv("ADACOMP_EPOCH", "3")
    message = one_error(capsys, "train")
    assert message.startswith("unknown environment variables ADACOMP_BIN_SIZE (did you mean")
    assert "ADACOMP_EPOCH (did you mean ADACOMP_EPOCHS?): no option" in message


def test_the_env_command_refuses_it_too(clean_env) -> None:
    clean_env.setenv("ADACOMP_BIN_SIZE", "conv=50")
    with pytest.raises(click.UsageError, match="did you mean ADACOMP_BIN_SIZES"):
        _resolved_train_defaults()


def test_the_real_env_var_of_bin_size_is_read(clean_env) -> None:
    assert "ADACOMP_BIN_SIZES" in option_variables(train_cli.make_context("train", []))
    clean_env.setenv("ADACOMP_BIN_SIZES", "conv=50 fc=400")
    assert resolve()["bin_sizes"] == {"conv": 50, "fc": 400}


def test_variables_the_project_reads_are_allowed(clean_env) -> None:
    assert {DATA_DIR_ENV, MAX_BYTES_ENV} <= set(NON_OPTION_VARIABLES)
    for name in NON_OPTION_VARIABLES:
        clean_env.setenv(name, "1")
    clean_env.setenv("ADACOMP_EPOCHS", "3")
    assert resolve()["epochs"] == 3


def test_every_adacomp_variable_in_the_code_is_an_option_or_allowed() -> None:
    """Scripts, tests and code set or read no variable that train would refuse."""
    with train_cli.make_context("train", []) as ctx:
        known = {*option_variables(ctx), *NON_OPTION_VARIABLES}
    used: dict[str, str] = {}
    for folder in ("adacomp_mpi", "cli", "models", "scripts", "tests"):
        for path in (REPO / folder).rglob("*"):
            if (
                path.is_file()
                and path.suffix in {".py", ".sh", ".sbatch", ""}
                and path != Path(__file__)
            ):
                text = path.read_text(errors="replace")
                for name in re.findall(r"\bADACOMP_[A-Z0-9_]*[A-Z0-9]\b", text):
                    used.setdefault(name, str(path.relative_to(REPO)))
    assert {name: where for name, where in used.items() if name not in known} == {}


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "ADACOMP_EPOCHS",
            "abc",
            "Invalid value for '--epochs' (from ADACOMP_EPOCHS): 'abc' is not a valid integer",
        ),
        ("ADACOMP_LR", "-1", "Invalid value for '--lr' (from ADACOMP_LR): -1.0 is not in the"),
        (
            "ADACOMP_MODEL",
            "resnet9000",
            "Invalid value for '--model' (from ADACOMP_MODEL): unknown model 'resnet9000'",
        ),
        (
            "ADACOMP_BIN_SIZES",
            "fc=1",
            "Invalid value for '--bin-size' (from ADACOMP_BIN_SIZES): L_T must be >= 2",
        ),
    ],
)
def test_a_bad_env_value_names_its_variable(
    capsys, clean_env, variable: str, value: str, expected: str
) -> None:
    clean_env.setenv(variable, value)
    assert one_error(capsys).startswith(expected)


def test_a_bad_command_line_value_names_no_variable(capsys, clean_env) -> None:
    clean_env.setenv("ADACOMP_EPOCHS", "3")
    message = one_error(capsys, "--epochs", "abc")
    assert message.startswith("Invalid value for '--epochs': 'abc'"), message


def test_a_bad_config_value_names_its_file(capsys, clean_env, tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text('epochs = "abc"\n')
    message = one_error(capsys, "--config", str(tmp_path / "run.toml"))
    source = f"(from config file {tmp_path / 'run.toml'})"
    assert message.startswith(f"Invalid value for '--epochs' {source}: 'abc'"), message


@pytest.mark.parametrize(
    "text",
    ['bin-size = ["conv=50", "fc=400"]\n', 'bin_size = "conv=50 fc=400"\n',
     "bin_sizes = {conv = 50, fc = 400}\n"],
)  # fmt: skip
def test_a_config_file_takes_the_flag_spelling_of_bin_size(
    clean_env, tmp_path: Path, text: str
) -> None:
    (tmp_path / "run.toml").write_text(text)
    assert resolve("--config", str(tmp_path / "run.toml"))["bin_sizes"] == {"conv": 50, "fc": 400}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('binsizes = ["conv=50"]\n', "unknown options ['binsizes'] (did you mean 'bin_sizes'?)"),
        (
            "epochz = 3\nzzz = 1\n",
            "unknown options ['epochz', 'zzz'] (did you mean 'epochs' for 'epochz'?)",
        ),
        (
            'bin-size = ["conv=50"]\nbin_sizes = {fc = 400}\n',
            "'bin_size' and 'bin_sizes' are the same option; keep one",
        ),
    ],
)
def test_a_config_key_that_is_no_option_is_refused_with_a_suggestion(
    capsys, clean_env, tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "run.toml").write_text(text)
    message = one_error(capsys, "--config", str(tmp_path / "run.toml"))
    assert message == f"Invalid value for '--config': {tmp_path}/run.toml: {expected}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a b=50", "key 'a b' in 'a b=50' is not a layer kind or parameter name"),
        ("fc..weight=50", "key 'fc..weight' in 'fc..weight=50' is not a layer kind"),
        ("=50", "'=50' is not KEY=L_T"),
        ("fc=5x", "L_T in 'fc=5x' is not an integer"),
    ],
)
def test_bin_size_keys_must_be_kinds_or_parameter_names(
    capsys, clean_env, value: str, expected: str
) -> None:
    message = one_error(capsys, "--bin-size", value)
    assert message.startswith(f"Invalid value for '--bin-size': {expected}"), message


def test_bin_size_keys_that_parse_and_a_key_given_twice(capsys, clean_env) -> None:
    params = resolve(*[f"--bin-size={v}" for v in ("0.weight=200", "enc.layers.1.bias=9", "fc=5")])
    assert params["bin_sizes"] == {"0.weight": 200, "enc.layers.1.bias": 9, "fc": 5}
    assert resolve("--bin-size", "fc=5", "--bin-size", "fc=5")["bin_sizes"] == {"fc": 5}
    message = one_error(capsys, "--bin-size", "fc=50", "--bin-size", "fc=500")
    assert message == "Invalid value for '--bin-size': 'fc' is given twice (50 and 500)"


def _real_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command on one rank (no mpiexec), from a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADACOMP_")}
    return subprocess.run(
        [*train_command(), "--epochs", "1", "--output-dir", str(tmp_path / "out"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )


def test_resume_of_a_typo_or_a_run_directory_says_what_to_give(tmp_path: Path) -> None:
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    for resume, expected in (
        ("atuo", "no checkpoint at 'atuo' (did you mean 'auto'?); give a checkpoint directory"),
        ("old", "old is a run directory, not a checkpoint, and old/checkpoints holds no"),
    ):
        result = _real_cli(tmp_path, "--resume", resume)
        errors = result.stderr.splitlines()
        assert result.returncode == 2 and len(errors) == 1, result.stdout + result.stderr
        assert errors[0].startswith(f"adacomp-train: error: {expected}"), errors[0]
        assert not (tmp_path / "out" / "summary.json").exists()


def test_model_options_from_the_command_line_env_and_config(
    capsys, clean_env, tmp_path: Path
) -> None:
    assert resolve("--model-option", "hidden=64,32")["model_options"] == {"hidden": "64,32"}
    clean_env.setenv("ADACOMP_MODEL_OPTIONS", "hidden=16 dropout=0.1")
    assert resolve()["model_options"] == {"hidden": "16", "dropout": "0.1"}
    clean_env.delenv("ADACOMP_MODEL_OPTIONS")
    config = tmp_path / "run.toml"
    config.write_text('model-option = {hidden = "8"}\n')
    assert resolve("--config", str(config))["model_options"] == {"hidden": "8"}
    message = one_error(capsys, "--model-option", "hidden")
    assert message.startswith("Invalid value for '--model-option': 'hidden' is not KEY=VALUE")


def test_an_unknown_model_option_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    done = _real_cli(tmp_path, "--model-option", "width=3")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "adacomp-train: error: model 'mlp' has no option 'width'; its options are hidden=256,128"
    )
