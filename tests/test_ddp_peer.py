"""scripts/ddp_peer.py for real: 2 gloo ranks on 127.0.0.1, the embedded digits data.

Three launches cover the three ways ranks find each other: torch's RANK/WORLD_SIZE
variables (fp16), MPICH hydra's PMI_RANK/PMI_SIZE (fp32) and torchrun (PowerSGD).
Every launch has a hard timeout, so a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_peer.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")
TIMEOUT = 120
STEPS = 30
LAUNCH_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
)
MODES = {
    "fp32": ("pmi", []),
    "fp16": ("torch", []),
    "powersgd": ("torchrun", ["--powersgd-rank", "1"]),
}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_pair(args: list[str], *, style: str, cwd: Path) -> tuple[int, str, str]:
    """Two plain processes that find each other through environment variables."""
    rank_var, size_var = ("PMI_RANK", "PMI_SIZE") if style == "pmi" else ("RANK", "WORLD_SIZE")
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            cwd=cwd,
            env=_clean_env(
                **{rank_var: str(r), size_var: "2"}, MASTER_ADDR="127.0.0.1", MASTER_PORT=port
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    try:
        outputs = [proc.communicate(timeout=TIMEOUT) for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"ddp_peer {style} launch hung for over {TIMEOUT} s")
    code = max(proc.returncode for proc in procs)
    return code, outputs[0][0], "".join(err for _, err in outputs)


def _launch(mode: str, out: Path) -> tuple[int, str, str]:
    style, extra = MODES[mode]
    args = [
        "--dataset",
        "digits",
        "--max-steps",
        str(STEPS),
        "--eval-every",
        "10",
        "--mode",
        mode,
        "--output-dir",
        str(out),
        *extra,
    ]
    if style != "torchrun":
        return _launch_pair(args, style=style, cwd=out.parent)
    if not TORCHRUN.exists():
        pytest.skip(f"no torchrun next to {sys.executable}")
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(SCRIPT), *args]
    done = subprocess.run(
        command,
        cwd=out.parent,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """mode -> {summary, metrics, stdout}; all three launched once for the module."""
    results = {}
    for mode in MODES:
        out = tmp_path_factory.mktemp(mode) / "out"
        code, stdout, stderr = _launch(mode, out)
        assert code == 0, f"{mode} failed:\n{stderr[-3000:]}"
        metrics = (out / "metrics.jsonl").read_text().splitlines()
        results[mode] = {
            "summary": json.loads((out / "summary.json").read_text()),
            "metrics": [json.loads(line) for line in metrics],
            "stdout": stdout,
        }
    return results


@pytest.mark.parametrize("mode", list(MODES))
def test_summary_and_eval_records(runs: dict[str, dict[str, Any]], mode: str) -> None:
    run = runs[mode]
    summary = run["summary"]
    system = "ddp-powersgd-r1" if mode == "powersgd" else f"ddp-{mode}"
    assert re.search(
        rf"^{system}: 2 ranks, {STEPS} steps, test acc 0\.\d{{4}}, ", run["stdout"], re.MULTILINE
    )
    expected = {
        "system": system,
        "mode": mode,
        "world_size": 2,
        "model": "mlp",
        "dataset": "digits",
        "steps": STEPS,
        "batch_size": 16,
        "lr": 0.05,
        "optimizer": "sgd",
        "seed": 0,
        "threads": 1,
        "params_identical": True,
    }
    assert {key: summary[key] for key in expected} == expected
    assert len(summary["hostnames"]) == 2
    assert 0 < summary["train_seconds"] < summary["wall_seconds"]
    assert summary["seconds_per_step"] == pytest.approx(summary["train_seconds"] / STEPS)
    assert summary["test_accuracy"] > 0.25  # 10 classes: chance is 0.1
    assert "test_perplexity" not in summary  # a classify task
    evals = summary["evals"]
    assert [record["step"] for record in evals] == [10, 20, 30]
    assert evals == run["metrics"]
    assert all(record["type"] == "eval" for record in evals)
    times = [record["train_seconds"] for record in evals]
    assert times == sorted(times) and all(r["wall_seconds"] >= r["train_seconds"] for r in evals)
    assert evals[-1]["test_loss"] == summary["test_loss"]
    assert evals[-1]["test_accuracy"] == summary["test_accuracy"]
    assert evals[-1]["test_loss"] < evals[0]["test_loss"]


def test_compression_settings_and_fp16_tracks_fp32(runs: dict[str, dict[str, Any]]) -> None:
    fp32, fp16, psgd = (runs[mode]["summary"] for mode in ("fp32", "fp16", "powersgd"))
    assert (psgd["powersgd_rank"], psgd["powersgd_start_iter"]) == (1, 10)
    assert fp32["powersgd_rank"] is None and fp16["powersgd_start_iter"] is None
    # Same init, data and order: fp16 rounding of the averaged gradients barely moves it.
    assert fp16["test_loss"] == pytest.approx(fp32["test_loss"], rel=1e-2)
    assert psgd["test_loss"] != fp32["test_loss"]  # the hook really ran


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--dataset", "fashion_mnist", "--data-path", "missing"], "not found"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--output-dir", str(tmp_path / "out")],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("Error: ") and message in done.stderr
    assert not (tmp_path / "out" / "summary.json").exists()
