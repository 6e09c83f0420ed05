"""``adacomp-train report``: loading and checking run directories, plots, the summary table."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adacomp_mpi.cli.main import main
from adacomp_mpi.codec.specs import LAYER_KINDS
from adacomp_mpi.report.runs import load_run, load_runs, read_metrics
from adacomp_mpi.report.schema import (
    METRICS_FILE,
    RECORD_SCHEMAS,
    TIME_PHASES,
    ReportError,
    validate_metrics_record,
)
from adacomp_mpi.report.table import TABLE_COLUMNS, format_bytes
from adacomp_mpi.report.write import write_report

RECORDED = Path(__file__).parent / "data" / "recorded_runs"
DENSE, ADACOMP = RECORDED / "dense_mlp_n2", RECORDED / "adacomp_mlp_n2"
RUNS = (DENSE, ADACOMP)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]


def summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())


def table_rows(markdown: str) -> list[dict[str, str]]:
    """The summary.md table as {column: cell} per row."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# --- the recorded fixtures follow the documented schema -----------------------------------
@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_fixtures_match_the_documented_schema(run: Path) -> None:
    recorded = records(run)
    for record in recorded:
        validate_metrics_record(record)  # strict: no unknown keys either
    steps = [r for r in recorded if r["type"] == "step"]
    epochs = [r for r in recorded if r["type"] == "epoch"]
    s = summary(run)
    assert [r["step"] for r in steps] == list(range(1, s["steps"] + 1))
    assert [r["epoch"] for r in epochs] == list(range(s["epochs"]))
    assert epochs[-1]["test_accuracy"] == pytest.approx(s["test_accuracy"])
    assert sum(r["bytes_sent"] for r in steps) == pytest.approx(s["bytes_sent"])
    dense = sum(r["dense_bytes"] for r in steps)
    assert dense == pytest.approx(s["dense_bytes"])
    assert steps[-1]["cumulative_compression_ratio"] == pytest.approx(
        dense / s["bytes_sent"], rel=1e-3
    )
    assert set(s["time_breakdown"]) == set(TIME_PHASES)
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == s["world_size"]
    assert {"torch", "numpy", "mpi4py", "mpi_library", "python", "adacomp_mpi"} <= set(
        config["versions"]
    )
    assert "git_commit" in config


def test_dense_fixture_sends_everything() -> None:
    for record in records(DENSE):
        if record["type"] == "step":
            assert record["compression_ratio"] == 1.0
            assert set(record["compression_ratio_by_kind"].values()) == {1.0}
            assert record["density"] == 1.0
            assert record["bits_per_sent_element"] is None


def test_fixtures_stay_small() -> None:
    assert sum(f.stat().st_size for f in RECORDED.rglob("*") if f.is_file()) < 100_000


# --- validate_metrics_record --------------------------------------------------------------
def step_record() -> dict[str, Any]:
    return next(r for r in records(ADACOMP) if r["type"] == "step")


def epoch_record() -> dict[str, Any]:
    return next(r for r in records(ADACOMP) if r["type"] == "epoch")


def test_schema_registry_covers_every_record_type() -> None:
    assert set(RECORD_SCHEMAS) == {"step", "epoch", "eval"}
    validate_metrics_record({**epoch_record(), "test_perplexity": 3.2})
    evaluation = {"type": "eval", "epoch": 0, "step": 30, "test_loss": 0.5}
    validate_metrics_record({**evaluation, "test_accuracy": 0.9, "wall_seconds": 2.0})
    with pytest.raises(ReportError, match="eval record: missing key 'test_accuracy'"):
        validate_metrics_record({**evaluation, "wall_seconds": 2.0})


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda r: r.pop("loss"), "loss"),
        (lambda r: r.update(step=0), "step"),
        (lambda r: r.update(samples=True), "samples"),
        (lambda r: r.update(bytes_sent=12.5), "bytes_sent"),
        (lambda r: r.update(lr="0.05"), "lr"),
        (lambda r: r.update(density=1.5), "density"),
        (lambda r: r.update(bits_per_sent_element="8"), "bits_per_sent_element"),
        (lambda r: r["time"].pop("encode"), "time"),
        (lambda r: r["time"].update(encode=-1.0), "time"),
        (
            lambda r: r["compression_ratio_by_kind"].update(attention=3.0),
            "compression_ratio_by_kind",
        ),
        (lambda r: r.update(surprise=1), "surprise"),
        (lambda r: r.update(type="batch"), "type"),
    ],
)
def test_schema_errors_name_the_offending_key(change: Any, key: str) -> None:
    record = copy.deepcopy(step_record())
    change(record)
    with pytest.raises(ReportError, match=f"'{key}'"):
        validate_metrics_record(record)


def test_extra_keys_are_allowed_only_when_asked() -> None:
    record = {**epoch_record(), "learning_rate_schedule": "cosine"}
    validate_metrics_record(record, allow_extra=True)
    with pytest.raises(ReportError, match="unknown key 'learning_rate_schedule'"):
        validate_metrics_record(record)
    with pytest.raises(ReportError, match="JSON object"):
        validate_metrics_record([1, 2])


def test_null_bits_and_nan_loss_are_valid() -> None:
    validate_metrics_record({**step_record(), "bits_per_sent_element": None, "loss": math.nan})


# --- loading runs -------------------------------------------------------------------------
def test_load_run_reads_steps_epochs_and_config() -> None:
    run = load_run(ADACOMP)
    assert len(run.steps) == summary(ADACOMP)["steps"]
    assert len(run.epochs) == summary(ADACOMP)["epochs"]
    assert run.config["world_size"] == 2
    assert run.time_breakdown() == pytest.approx(summary(ADACOMP)["time_breakdown"])


def test_time_breakdown_falls_back_to_summed_steps(tmp_path: Path) -> None:
    run_dir = copy_run(ADACOMP, tmp_path / "run")
    s = summary(run_dir)
    del s["time_breakdown"]
    (run_dir / "summary.json").write_text(json.dumps(s))
    breakdown = load_run(run_dir).time_breakdown()
    steps = [r for r in records(run_dir) if r["type"] == "step"]
    assert breakdown["encode"] == pytest.approx(sum(r["time"]["encode"] for r in steps))


def test_labels_say_what_differs(tmp_path: Path) -> None:
    runs = load_runs(RUNS)
    assert [run.label for run in runs] == ["none mlp n=2", "adacomp mlp n=2"]
    twins = [copy_run(ADACOMP, tmp_path / name / "run") for name in ("a", "b")]
    assert [run.label for run in load_runs(twins)] == [
        "adacomp mlp n=2 (a/run)",
        "adacomp mlp n=2 (b/run)",
    ]
    assert [run.label for run in load_runs([ADACOMP, ADACOMP])] == [
        f"adacomp mlp n=2 ({ADACOMP})",
        f"adacomp mlp n=2 ({ADACOMP}) #2",
    ]


def broken_line(run_dir: Path) -> None:
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    lines[2] = lines[2][:40]  # a record cut short, as by a crash mid-write
    (run_dir / METRICS_FILE).write_text("\n".join(lines) + "\n")


def missing_loss(run_dir: Path) -> None:
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    record = json.loads(lines[4])
    del record["loss"]
    lines[4] = json.dumps(record)
    (run_dir / METRICS_FILE).write_text("\n".join(lines) + "\n")


def summary_without(key: str) -> Any:
    def change(run_dir: Path) -> None:
        s = summary(run_dir)
        del s[key]
        (run_dir / "summary.json").write_text(json.dumps(s))

    return change


BREAKAGES = {
    "no metrics": (lambda d: (d / METRICS_FILE).unlink(), "metrics.jsonl: missing"),
    "no summary, no config": (
        lambda d: [(d / name).unlink() for name in ("summary.json", "config.json")],
        r"summary\.json: missing, and no config\.json",
    ),
    "truncated line": (broken_line, "line 3: not valid JSON"),
    "missing key": (missing_loss, "line 5: step record: missing key 'loss'"),
    "empty metrics": (lambda d: (d / METRICS_FILE).write_text(""), "no step records"),
    "summary not JSON": (lambda d: (d / "summary.json").write_text("{"), "not readable JSON"),
    "summary key": (summary_without("test_accuracy"), "missing key 'test_accuracy'"),
    "other run's summary": (
        lambda d: shutil.copy(ADACOMP / METRICS_FILE, d / METRICS_FILE),
        None,
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_run_directories_give_one_line_errors(breakage: str, tmp_path: Path) -> None:
    change, message = BREAKAGES[breakage]
    run_dir = copy_run(DENSE, tmp_path / "run")
    change(run_dir)
    if breakage == "other run's summary":  # same step count: only a mismatch in steps is caught
        s = summary(run_dir)
        s["steps"] += 1
        (run_dir / "summary.json").write_text(json.dumps(s))
        message = "files from different runs"
    with pytest.raises(ReportError, match=message) as raised:
        load_run(run_dir)
    assert "\n" not in str(raised.value)


def test_step_numbers_must_increase(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    first = step_record()
    path.write_text(json.dumps(first) + "\n" + json.dumps(first) + "\n")
    with pytest.raises(ReportError, match="strictly increasing"):
        read_metrics(path)


def test_missing_directory() -> None:
    with pytest.raises(ReportError, match="not a directory"):
        load_run(Path("/nonexistent/run"))


# --- the report ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    written = write_report(RUNS, out_dir=out)
    expected = ["loss.png", "accuracy.png", "compression.png", "time.png", "tta.png", "summary.md"]
    assert [path.name for path in written] == expected
    assert all(path.parent == out for path in written)
    return out


@pytest.mark.parametrize(
    "name", ["loss.png", "accuracy.png", "compression.png", "time.png", "tta.png"]
)
def test_plots_are_readable_pngs(report_dir: Path, name: str) -> None:
    from matplotlib.image import imread

    path = report_dir / name
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    height, width = pixels.shape[:2]
    assert 250 <= height <= 1500 and 500 <= width <= 2500, pixels.shape
    assert width > height  # landscape: side-by-side panels or a legend on the right
    assert pixels[..., :3].std() > 0.05  # not blank


def test_summary_table_has_one_row_per_run(report_dir: Path) -> None:
    markdown = (report_dir / "summary.md").read_text()
    rows = table_rows(markdown)
    assert [row["run"] for row in rows] == ["none mlp n=2", "adacomp mlp n=2"]
    assert list(rows[0]) == list(TABLE_COLUMNS)
    for row, run in zip(rows, RUNS, strict=True):
        s = summary(run)
        assert row["world size"] == "2"
        assert row["compression"] == s["compression"]
        assert (row["model"], row["dataset"]) == ("mlp", "digits")
        assert row["steps"] == str(s["steps"])
        assert row["test accuracy"] == f"{s['test_accuracy']:.4f}"
        assert row["test loss"] == f"{s['test_loss']:.4f}"
        assert row["compression ratio"] == f"{s['compression_ratio']:.1f}x"
        assert row["bytes sent"] == format_bytes(s["bytes_sent"])
        assert row["wall seconds"] == f"{s['wall_seconds']:.1f}"
        assert row["params identical"] == "True"
    assert rows[0]["compression ratio"] == "1.0x"
    assert rows[0]["bits/sent element"] == "n/a"
    assert rows[1]["bits/sent element"] == f"{summary(ADACOMP)['bits_per_sent_element']:.2f}"
    assert f"`{ADACOMP}`" in markdown


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (1000, "1 kB"), (246_908, "247 kB"), (18_703_968, "18.7 MB")],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


def test_long_runs_without_epochs_and_other_kinds_still_plot(tmp_path: Path) -> None:
    """Smoothing (> 40 steps), a run with no epoch records, conv/recurrent kinds."""
    run_dir = tmp_path / "long"
    run_dir.mkdir()
    shutil.copy(ADACOMP / "summary.json", run_dir)
    base = step_record()
    lines = []
    for step in range(1, 201):
        ratios = {"conv": 40.0 + step % 7, "recurrent": 300.0, "other": 0.96}
        record = {**base, "step": step, "loss": 2.0 / step, "compression_ratio_by_kind": ratios}
        lines.append(json.dumps(record))
    (run_dir / METRICS_FILE).write_text("\n".join(lines) + "\n")
    s = summary(run_dir)
    (run_dir / "summary.json").write_text(json.dumps({**s, "steps": 200, "model": "cnn"}))
    written = write_report([run_dir, ADACOMP], out_dir=tmp_path / "out")
    assert all(path.stat().st_size > 10_000 for path in written if path.suffix == ".png")
    assert "adacomp cnn n=2" in (tmp_path / "out" / "summary.md").read_text()


def test_unwritable_output_is_a_report_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ReportError, match="cannot write the report"):
        write_report(RUNS, out_dir=blocker / "report")


# --- the command --------------------------------------------------------------------------
def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
        sys.exit(0)
    captured = capsys.readouterr()
    return done.value.code or 0, captured.out, captured.err


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["report", str(DENSE), str(ADACOMP), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    names = ["loss.png", "accuracy.png", "compression.png", "time.png", "tta.png", "summary.md"]
    assert out.split() == [str(tmp_path / name) for name in names]


def test_cli_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["report", "--help"], capsys)
    assert code == 0
    assert "Example:" in out and "adacomp-train report runs/dense runs/adacomp" in out
    assert "--out" in out and "RUN_DIR..." in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report"], "Missing argument 'RUN_DIR...'"),
        (["report", "/nonexistent/run"], "does not exist"),
    ],
)
def test_cli_usage_errors_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("adacomp-train: error: ")
    assert message in err


def test_cli_bad_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = copy_run(DENSE, tmp_path / "run")
    broken_line(run_dir)
    code, _, err = run_cli(["report", str(run_dir), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "line 3: not valid JSON" in err
    assert not (tmp_path / "out").exists()


def test_schema_and_command_do_not_import_matplotlib() -> None:
    """Every training rank imports the CLI; the trainer tests import the schema check."""
    code = (
        "import sys, adacomp_mpi.report, adacomp_mpi.cli.report; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_layer_kinds_match_the_codec() -> None:
    from adacomp_mpi.codec.specs import DEFAULT_BIN_SIZES

    assert set(DEFAULT_BIN_SIZES) | {"other"} == set(LAYER_KINDS)
