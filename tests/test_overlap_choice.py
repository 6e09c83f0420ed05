"""--overlap auto: the trial alternates the modes, ignores warm-up steps,
and keeps the faster by median."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mpi_util import train_command

from adacomp_mpi.train.overlap_choice import OverlapTrial


def _run(trial: OverlapTrial, seconds: dict[bool, float], steps: int) -> list[bool]:
    modes = []
    for _ in range(steps):
        mode = trial.next_mode()
        modes.append(mode)
        trial.observe(mode, seconds[mode])
    return modes


def test_the_trial_alternates_then_holds_the_faster_mode() -> None:
    trial = OverlapTrial(warmup=1, samples=3)
    modes = _run(trial, {False: 2.0, True: 1.0}, 12)
    assert modes[:8] == [False, True] * 4  # 1 warm-up + 3 counted steps of each
    assert trial.choice is True and modes[8:] == [True] * 4


def test_a_slower_overlap_is_turned_off() -> None:
    trial = OverlapTrial(warmup=0, samples=2)
    assert _run(trial, {False: 1.0, True: 3.0}, 6)[4:] == [False, False]
    assert trial.medians() == {False: 1.0, True: 3.0}


def test_warm_up_steps_do_not_count() -> None:
    trial = OverlapTrial(warmup=1, samples=1)
    trial.observe(False, 100.0)  # warm-up: a slow first step must not decide
    trial.observe(True, 1.0)
    assert trial.choice is None
    trial.observe(False, 0.5)
    assert trial.observe(True, 1.0) is False  # the choice is announced once
    assert trial.observe(False, 9.0) is None and trial.choice is False


def _recorded_overlap(tmp_path: Path, *args: str) -> str:
    out = tmp_path / "run"
    result = subprocess.run(
        [
            *train_command(),
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--quiet",
            "--output-dir",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / "config.json").read_text())["options"]["overlap"]


def test_the_old_no_overlap_flag_still_means_off(tmp_path: Path) -> None:
    assert _recorded_overlap(tmp_path, "--no-overlap") == "off"


def test_a_run_recorded_with_a_boolean_overlap_replays(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"overlap": True}))
    assert _recorded_overlap(tmp_path, "--config", str(old)) == "on"
