"""scripts/bench_tta.py: how time to target is read from the saved cells, the cost model,
the doc built from them, and a real one-cell run on two namespace hosts (--quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import SCRIPTS, VENV_BIN
from netns_helpers import netns_skip_reason

sys.path.insert(0, str(SCRIPTS))
import cost_model
import tta_doc

REPO = SCRIPTS.parent
QUICK_TIMEOUT_S = 480


def curve(points: list[tuple[float, float]]) -> list[dict[str, float]]:
    return [{"step": 10 * (i + 1), "seconds": s, "quality": q} for i, (s, q) in enumerate(points)]


def result(points: list[tuple[float, float]], *, link_bytes: int, **extra: Any) -> dict[str, Any]:
    return {
        "steps": 10 * len(points),
        "train_seconds": points[-1][0],
        "seconds_per_step": points[-1][0] / (10 * len(points)),
        "final_quality": points[-1][1],
        "link_bytes": link_bytes,
        "parameters": 2_000_000,
        "curve": curve(points),
        "command": "mpiexec ...",
        "load_before": 1.0,
        "load_after": 1.5,
        **extra,
    }


def cell(rate: str, gbit: float, dense_s: float, ada_s: float) -> dict[str, Any]:
    return {
        "cell": f"mlp-{rate}-n2",
        "workload": "mlp",
        "model": "mlp",
        "model_options": ["hidden=2048,256"],
        "dataset": "fashion_mnist",
        "metric": "test_accuracy",
        "steps": 30,
        "eval_every": 10,
        "batch_size": 16,
        "optimizer": "sgd",
        "lr": 0.01,
        "rate": rate,
        "ranks": 2,
        "link_gbit_s": gbit,
        "date": "2026-12-01 23:00 UTC",
        "machine": "2 cores",
        "systems": {
            "dense": result(
                [(dense_s, 0.70), (2 * dense_s, 0.80), (3 * dense_s, 0.84)],
                link_bytes=int(8e6 * 60),
                compression_ratio=1.0,
            ),
            "adacomp": result(
                [(ada_s, 0.60), (2 * ada_s, 0.836), (3 * ada_s, 0.83)],
                link_bytes=int(8e6 * 60 / 200),
                compression_ratio=200.0,
            ),
            "ddp-fp16": result([(dense_s / 2, 0.7), (dense_s, 0.80)], link_bytes=int(4e6 * 60)),
            "ddp-psgd-r1": result([(1.0, 0.5), (2.0, 0.6)], link_bytes=1000),
        },
    }


def test_the_target_is_dense_final_less_half_a_point() -> None:
    c = cell("1gbit", 0.95, dense_s=3.0, ada_s=1.0)
    assert tta_doc.target(c) == pytest.approx(0.835)
    assert tta_doc.time_to_target(c, "dense") == 9.0
    assert tta_doc.time_to_target(c, "adacomp") == 2.0  # the first evaluation past it
    assert tta_doc.time_to_target(c, "ddp-psgd-r1") is None  # never there
    assert tta_doc.best_peer(c) is None  # fp16 stops at 0.80


def test_perplexity_targets_are_two_percent_above_dense() -> None:
    c = cell("1gbit", 0.95, dense_s=3.0, ada_s=1.0)
    c["metric"] = "test_perplexity"
    for name, points in (("dense", [(1, 9.0), (2, 5.0)]), ("adacomp", [(0.5, 6.0), (1, 5.08)])):
        c["systems"][name]["curve"] = curve(points)
        c["systems"][name]["final_quality"] = points[-1][1]
    assert tta_doc.target(c) == pytest.approx(5.1)
    assert tta_doc.time_to_target(c, "adacomp") == 1.0


def test_target_checks_say_met_or_by_how_much_missed() -> None:
    cells = [cell("1gbit", 0.95, dense_s=3.0, ada_s=1.0), cell("100mbit", 0.1, 30.0, 1.0)]
    checks = "\n".join(tta_doc.target_checks(cells))
    assert "4x sooner than dense (adacomp vs dense): 4.50x, met" in checks
    assert "15x sooner than dense (adacomp vs dense): 45.00x, met" in checks
    assert "fastest link" in checks and "not measured" in checks
    slow = [cell("1gbit", 0.95, dense_s=3.0, ada_s=1.5)]
    assert "3.00x, missed by 1.33x" in "\n".join(tta_doc.target_checks(slow))


def test_cost_model_fits_the_wire_term_and_projects() -> None:
    cells = [
        cell(r, g, d, a) for r, g, d, a in (("1gbit", 1.0, 3.0, 1.0), ("10gbit", 5.0, 1.2, 0.9))
    ]
    fit = cost_model.fit_system(cells, "dense")
    assert fit is not None and fit["points"] == 2
    # two points: the line goes through both
    for c in cells:
        r = c["systems"]["dense"]
        wire = r["link_bytes"] / r["steps"] / 2 / (c["link_gbit_s"] * 1e9 / 8)
        assert fit["c"] + fit["beta"] * wire == pytest.approx(r["seconds_per_step"])
    assert cost_model.dense_time(1e6, 2, 1e9) == pytest.approx(4e-3 + 2e-5)
    # with no codec cost the exchange pays until N = 2r on bytes alone
    assert cost_model.crossover(1e8, 1e9, k_enc=0.0, k_dec=0.0, ratio=100) in range(190, 211)
    # decoding N payloads ends it sooner
    assert cost_model.crossover(1e8, 1e9, k_enc=0.0, k_dec=1e-10, ratio=100) < 190
    assert "Not fitted" in "\n".join(cost_model.cost_model_markdown(cells))
    phases = {"forward_backward": 1.0, "encode": 0.6, "communicate": 0.1, "decode": 0.24}
    for c in cells:
        c["systems"]["adacomp"]["time_breakdown"] = {**phases, "optimizer": 0.1}
    assert cost_model.codec_constants(cells, 2e6) == pytest.approx(
        (0.6 / 30 / 2e6, 0.24 / 60 / 2e6)
    )
    text = "\n".join(cost_model.cost_model_markdown(cells))
    assert "ResNet-50 size" in text and "BERT-large size" in text and "k_enc = 10.00 ns" in text


def test_the_doc_is_rebuilt_from_the_saved_cells_keeping_notes(tmp_path: Path) -> None:
    for c in (cell("1gbit", 0.95, 3.0, 1.0), cell("100mbit", 0.1, 30.0, 1.0)):
        (tmp_path / f"{c['cell']}.json").write_text(json.dumps(c))
    doc = tmp_path / "TTA.md"
    doc.write_text(f"old\n{tta_doc.NOTES_BEGIN}\nmy reading\n{tta_doc.NOTES_END}\nold\n")
    written = tta_doc.write_doc(tmp_path, doc=doc)
    text = doc.read_text()
    assert "my reading" in text and "old" not in text
    assert text.index("100mbit (one TCP") < text.index("1gbit (one TCP")
    assert (tmp_path / "mlp-n2.png") in written
    assert "| adacomp | 2.0 | 4.50x | - | 2.0 | 4.50x |" in text


def quick_skip_reason() -> str | None:
    if reason := netns_skip_reason():
        return reason
    if not (REPO / "data" / "fashion_mnist").is_dir():
        return "no data/fashion_mnist (scripts/fetch_datasets.sh)"
    return None


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
def test_quick_run_on_two_namespace_hosts(tmp_path: Path) -> None:
    if reason := quick_skip_reason():
        pytest.skip(reason)
    out = tmp_path / "tta"
    command = [str(VENV_BIN / "python"), str(SCRIPTS / "bench_tta.py"), "--quick"]
    command += ["--out", str(out), "--work", str(tmp_path / "runs")]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((out / "mlp-1gbit-n2.json").read_text())
    systems = saved["systems"]
    assert set(systems) == {"dense", "adacomp", "ddp-fp32"}
    assert not any("failed" in r for r in systems.values())
    # the same model, data order and schedule: DDP fp32 follows dense step for step
    assert systems["ddp-fp32"]["final_quality"] == pytest.approx(
        systems["dense"]["final_quality"], abs=2e-3
    )
    assert systems["adacomp"]["link_bytes"] * 20 < systems["dense"]["link_bytes"]
    assert 0.05 < saved["link_gbit_s"] < 1.1  # tbf at 1gbit
    assert "| dense |" in (out / "TTA.md").read_text()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    assert f"{saved['hosts']}1" not in listed.stdout  # the hosts are gone


def test_the_trainer_writes_the_training_clock(tmp_path: Path) -> None:
    from adacomp_mpi.report.runs import read_records
    from adacomp_mpi.report.schema import validate_metrics_record

    out = tmp_path / "run"
    command = [str(VENV_BIN / "adacomp-train"), "--epochs", "1", "--max-steps", "6"]
    command += ["--eval-every", "3", "--quiet", "--output-dir", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluations = [r for r in read_records(out / "metrics.jsonl") if r["type"] != "step"]
    assert [r["step"] for r in evaluations] == [3, 6, 6]  # eval, eval, the epoch's end
    for record in evaluations:
        validate_metrics_record(record)  # strict: train_seconds is documented
        assert 0 < record["train_seconds"] < record["wall_seconds"]
    clocks = [r["train_seconds"] for r in evaluations]
    assert clocks == sorted(clocks)
    # the time of the evaluation at step 6 is off the clock of the epoch record after it
    assert clocks[2] - clocks[1] < evaluations[2]["wall_seconds"] - evaluations[1]["wall_seconds"]
