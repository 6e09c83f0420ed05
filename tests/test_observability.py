"""Metrics, progress, run records, config precedence and the env command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpi_util import run_mpi, train_command

from adacomp_mpi.cli.train import train
from adacomp_mpi.report.schema import validate_metrics_record
from adacomp_mpi.train.config import TrainConfig


def _resolve(args: list[str]) -> dict:
    """The options ``train`` would run with, without starting a run."""
    with train.make_context("train", list(args)) as ctx:
        return dict(ctx.params)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real two-rank run, shared by the checks below."""
    out = tmp_path_factory.mktemp("run")
    result = run_mpi(
        2,
        [*train_command(), "--epochs", "2", "--output-dir", str(out / "run")],
        cwd=out,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "run", result.stdout


@pytest.mark.mpi
def test_metrics_jsonl_follows_the_documented_schema(recorded_run: tuple[Path, str]) -> None:
    run_dir, _ = recorded_run
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        validate_metrics_record(record)
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, summary["steps"] + 1))
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert sum(r["bytes_sent"] for r in steps) == summary["bytes_sent"]
    assert steps[-1]["cumulative_compression_ratio"] == pytest.approx(summary["compression_ratio"])
    assert epochs[-1]["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    phases = set(summary["time_breakdown"])
    assert phases == {"forward_backward", "encode", "communicate", "decode", "optimizer"}


@pytest.mark.mpi
def test_config_json_records_options_versions_and_world(recorded_run: tuple[Path, str]) -> None:
    run_dir, _ = recorded_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world_size"] == 2
    assert config["options"]["epochs"] == 2
    assert set(config["versions"]) >= {"torch", "numpy", "mpi4py", "mpi_library", "python"}
    assert "MPICH" in config["versions"]["mpi_library"]


@pytest.mark.mpi
def test_progress_without_a_terminal_is_periodic_log_lines(recorded_run: tuple[Path, str]) -> None:
    _, stdout = recorded_run
    lines = [line for line in stdout.splitlines() if " step " in line and " eta " in line]
    assert lines, stdout
    assert all(line.startswith("[0/2] epoch ") for line in lines)
    assert "\r" not in stdout  # no bar redraws in a log file


def test_precedence_is_cli_then_env_then_file_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "run.toml"
    config_file.write_text("epochs = 7\nlr = 0.2\nbatch-size = 9\nbin_sizes = {fc = 400}\n")
    monkeypatch.setenv("ADACOMP_LR", "0.3")
    params = _resolve(["--config", str(config_file), "--batch-size", "11"])
    assert params["epochs"] == 7  # file
    assert params["lr"] == pytest.approx(0.3)  # env beats file
    assert params["batch_size"] == 11  # command line beats all
    assert params["momentum"] == TrainConfig().momentum  # default
    assert dict(params["bin_sizes"]) == {"fc": 400}


def test_a_recorded_config_json_replays_every_option_but_where_to_write(
    tmp_path: Path,
) -> None:
    original = TrainConfig(
        epochs=3, lr=0.02, optimizer="adam", bin_sizes={"fc": 250}, seed=5,
        checkpoint_every=2, checkpoint_unit="epochs", output_dir=tmp_path / "old",
    )  # fmt: skip
    recorded = tmp_path / "config.json"
    recorded.write_text(json.dumps({"options": original.to_dict(), "world_size": 4}))
    params = _resolve(["--config", str(recorded)])
    params["bin_sizes"] = dict(params["bin_sizes"])
    params["checkpoint_every"], params["checkpoint_unit"] = params["checkpoint_every"]
    assert params.pop("deprecated_warmup_steps") is None
    replayed = TrainConfig(**params)
    assert replayed.output_dir is None  # a fresh runs/<time>, not the recorded run's
    expected = {**original.to_dict(), "output_dir": None}
    assert replayed.to_dict() == expected


def test_unknown_option_in_a_config_file_is_rejected(tmp_path: Path) -> None:
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({"epochz": 3}))
    with pytest.raises(Exception, match="unknown options \\['epochz'\\]"):
        _resolve(["--config", str(config_file)])


@pytest.mark.mpi
def test_env_command_reports_the_launch(tmp_path: Path) -> None:
    result = run_mpi(
        2, [*train_command(), "env", "--json"], cwd=tmp_path, env={"ADACOMP_EPOCHS": "4"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["world_size"] == 2
    assert sum(report["ranks_per_host"].values()) == 2
    assert "MPICH" in report["versions"]["mpi_library"]
    assert report["train_defaults"]["epochs"] == 4
    assert report["cuda"]["available"] in (True, False)
