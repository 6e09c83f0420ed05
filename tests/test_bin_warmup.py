"""--bin-warmup-steps, the compression warm-up: AdaComp's L_T / 8, / 4, / 2 over
the first steps, then L_T; a function of the step alone, so resume continues it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from mpi_util import train_command

from adacomp_mpi.codec import TensorSpec, decode, encode, make_state
from adacomp_mpi.codec.wire import HEADER_BYTES
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.report.runs import read_records
from adacomp_mpi.train.config import TRAJECTORY_OPTIONS, TrainConfig
from adacomp_mpi.train.run import train
from adacomp_mpi.train.schedule import bin_divisor


def test_the_ramp_divides_l_t_by_8_4_2_then_1() -> None:
    assert [bin_divisor(step, 9) for step in range(11)] == [8, 8, 8, 4, 4, 4, 2, 2, 2, 1, 1]
    assert {bin_divisor(step, 0) for step in range(5)} == {1}
    assert [bin_divisor(step, 2) for step in range(3)] == [8, 4, 1]  # short: stages shrink


def test_a_divided_bin_encodes_as_the_smaller_bin() -> None:
    """The codec at divisor 4 with L_T 400 is exactly the codec at L_T 100: the
    same records, the same residues; the decoder reads no bin size."""
    rng = np.random.default_rng(5)
    warm = make_state((TensorSpec("w", 3000, kind="fc", bin_size=400),))
    small = make_state((TensorSpec("w", 3000, kind="fc", bin_size=100),))
    warm.bin_divisor = 4
    for _ in range(3):
        grads = {"w": rng.standard_normal(3000).astype(np.float32)}
        payload, expected = encode(grads, warm), encode(grads, small)
        # the records alike; the headers differ only by the layout fingerprint
        assert payload[HEADER_BYTES:].tobytes() == expected[HEADER_BYTES:].tobytes()
        np.testing.assert_array_equal(
            decode(payload, warm.specs)["w"], decode(expected, small.specs)["w"]
        )
    np.testing.assert_array_equal(warm.residues[0], small.residues[0])
    tiny = make_state((TensorSpec("w", 30, kind="fc", bin_size=3),))
    tiny.bin_divisor = 8  # never below 2
    assert decode(encode({"w": np.ones(30, np.float32)}, tiny), tiny.specs)["w"].any()


def _densities(out: Path) -> list[float]:
    return [r["density"] for r in read_records(out / "metrics.jsonl") if r["type"] == "step"]


def test_a_warm_run_sends_more_early_and_resumes_bit_identically(tmp_path: Path) -> None:
    common = {"epochs": 2, "quiet": True, "max_steps": 0}
    plain = train(TrainConfig(**common, output_dir=tmp_path / "plain"), LocalCommunicator())
    steps_per_epoch = plain["steps"] // 2
    warmup = steps_per_epoch + steps_per_epoch // 2  # the ramp spans the epoch boundary
    options = {**common, "bin_warmup_steps": warmup}
    warm = train(TrainConfig(**options, output_dir=tmp_path / "warm"), LocalCommunicator())
    early = slice(0, warmup // 3)  # the L_T / 8 stage
    warm_density, plain_density = (
        np.mean(_densities(tmp_path / r)[early]) for r in ("warm", "plain")
    )
    assert warm_density > 2 * plain_density
    assert warm["bytes_sent"] > plain["bytes_sent"]
    first = TrainConfig(
        **{**options, "epochs": 1},
        checkpoint_every=1,
        checkpoint_unit="epochs",
        output_dir=tmp_path / "resumed",
    )
    train(first, LocalCommunicator())
    again = TrainConfig(**options, resume="auto", output_dir=tmp_path / "resumed")
    resumed = train(again, LocalCommunicator())
    assert resumed["param_digest"] == warm["param_digest"]
    assert resumed["bytes_sent"] == warm["bytes_sent"]
    assert "bin_warmup_steps" in TRAJECTORY_OPTIONS


def test_it_needs_adacomp(tmp_path: Path) -> None:
    command = [*train_command(), "--compression", "scalecom", "--bin-warmup-steps", "10"]
    done = subprocess.run(
        [*command, "--output-dir", str(tmp_path / "r")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "--bin-warmup-steps" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["-1", "many"])
def test_a_bad_count_is_exit_2(tmp_path: Path, value: str) -> None:
    done = subprocess.run(
        [*train_command(), "--bin-warmup-steps", value, "--output-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--bin-warmup-steps" in done.stderr
