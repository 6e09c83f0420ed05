"""The report's time-to-accuracy view and runs still in progress (no summary.json yet)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from adacomp_mpi.report.runs import load_run, load_runs
from adacomp_mpi.report.schema import METRICS_FILE, ReportError, validate_metrics_record
from adacomp_mpi.report.table import summary_markdown
from adacomp_mpi.report.timeplots import eval_seconds, plot_quality_panels, plot_time_to_accuracy
from adacomp_mpi.report.write import write_report

RECORDED = Path(__file__).parent / "data" / "recorded_runs"
DENSE, ADACOMP = RECORDED / "dense_mlp_n2", RECORDED / "adacomp_mlp_n2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def lines(run: Path) -> list[str]:
    return (run / METRICS_FILE).read_text().splitlines()


def running_copy(source: Path, target: Path, *, keep: int, cut_last: bool = False) -> Path:
    """A run as it looks mid-training: no summary.json, the first ``keep`` records,
    and optionally a last line still being written."""
    shutil.copytree(source, target)
    (target / "summary.json").unlink()
    kept = lines(source)[:keep]
    text = "\n".join(kept) + "\n"
    if cut_last:
        text += lines(source)[keep][:30]
    (target / METRICS_FILE).write_text(text)
    return target


def test_a_run_in_progress_is_read_from_its_config_and_records(tmp_path: Path) -> None:
    run = load_run(running_copy(DENSE, tmp_path / "run", keep=12, cut_last=True))
    records = [json.loads(line) for line in lines(DENSE)[:12]]
    steps = [r for r in records if r["type"] == "step"]
    assert run.in_progress
    assert run.summary["steps"] == steps[-1]["step"]
    assert run.summary["bytes_sent"] == sum(r["bytes_sent"] for r in steps)
    assert run.summary["wall_seconds"] == steps[-1]["wall_seconds"]
    assert run.summary["compression"] == "none" and run.summary["world_size"] == 2
    assert len(run.steps) == len(steps)


def test_a_running_run_is_labelled_and_reported(tmp_path: Path) -> None:
    running = running_copy(ADACOMP, tmp_path / "live", keep=20)
    runs = load_runs([DENSE, running])
    assert runs[1].label.endswith("(running)") and not runs[0].in_progress
    table = summary_markdown(runs)
    assert "n/a (running)" in table
    written = write_report([DENSE, running], out_dir=tmp_path / "out")
    assert (tmp_path / "out" / "tta.png") in written
    assert (tmp_path / "out" / "tta.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_cut_line_is_refused_once_the_run_is_finished(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(DENSE, run_dir)
    text = "\n".join(lines(DENSE)) + "\n" + lines(DENSE)[0][:30]
    (run_dir / METRICS_FILE).write_text(text)
    with pytest.raises(ReportError, match="not valid JSON"):
        load_run(run_dir)


def test_neither_summary_nor_config_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text((DENSE / METRICS_FILE).read_text())
    with pytest.raises(ReportError, match=r"no config\.json to read a run in progress"):
        load_run(tmp_path)


def evaluation(step: int, accuracy: float, **extra: Any) -> dict[str, Any]:
    record = {"type": "eval", "epoch": 0, "step": step, "test_loss": 1.0}
    return {**record, "test_accuracy": accuracy, "wall_seconds": step * 0.2, **extra}


def test_eval_records_carry_the_training_clock() -> None:
    validate_metrics_record(evaluation(10, 0.5, train_seconds=1.5))
    with pytest.raises(ReportError, match="'train_seconds'"):
        validate_metrics_record(evaluation(10, 0.5, train_seconds="soon"))
    assert eval_seconds(evaluation(10, 0.5, train_seconds=1.5)) == 1.5
    assert eval_seconds(evaluation(10, 0.5)) == 2.0  # older runs: wall seconds


def test_the_time_view_plots_evaluations_on_the_training_clock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(DENSE, run_dir)
    extra = [evaluation(5, 0.4, train_seconds=0.7), evaluation(10, 0.6, train_seconds=1.1)]
    with (run_dir / METRICS_FILE).open("a") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in extra)
    run = load_runs([run_dir])[0]
    assert [r["step"] for r in run.evals] == [5, 10]
    figure = plot_time_to_accuracy([run])
    _, accuracy_ax = figure.axes[:2]
    x, y = accuracy_ax.lines[0].get_data()
    by_step = {r["step"]: r for r in run.evaluations()}
    assert list(x) == [eval_seconds(by_step[s]) for s in sorted(by_step)]
    assert 0.7 in list(x) and 0.6 in list(y)


def test_quality_panels_keep_one_colour_per_system() -> None:
    panels = {
        "100mbit": {"dense": ([1, 10], [0.5, 0.8]), "adacomp": ([0.5, 2], [0.5, 0.79])},
        "1gbit": {"adacomp": ([0.4, 1], [0.5, 0.79]), "dense": ([0.5, 2], [0.5, 0.8])},
    }
    figure = plot_quality_panels(panels, ylabel="acc", targets={"1gbit": 0.795}, log_x=True)
    first, second = figure.axes[:2]
    colours = [
        {line.get_color() for line in ax.lines if line.get_linestyle() != "--"}
        for ax in figure.axes[:2]
    ]
    assert colours[0] == colours[1] and len(colours[0]) == 2
    assert first.get_lines()[0].get_color() == second.get_lines()[1].get_color()  # dense
    assert any(line.get_linestyle() == "--" for line in second.lines)  # the target
    assert first.get_xscale() == "log" and first.get_title() == "100mbit"
