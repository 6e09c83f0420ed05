"""The training controls do what they say: schedules per step, clipping bound,
max-steps, time limit, accumulation (one exchange per K micro-batches),
eval-every records, bf16, the final model.pt and --init-from."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from mpi_util import train_command

from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.report.runs import read_records
from adacomp_mpi.train.build import build_trainer
from adacomp_mpi.train.config import TrainConfig
from adacomp_mpi.train.gradients import parameter_digest
from adacomp_mpi.train.loss_scale import LossScale
from adacomp_mpi.train.run import train
from adacomp_mpi.train.schedule import Schedule

STEPS_PER_EPOCH = 90  # digits, one rank, batch 16


def _config(tmp_path: Path, **options: object) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "output_dir": tmp_path, "quiet": True, **options})


def _steps(out: Path) -> list[dict]:
    return [r for r in read_records(out / "metrics.jsonl") if r["type"] == "step"]


def test_schedules_step_by_step() -> None:
    assert [Schedule(warmup_steps=4, total_steps=10).factor(s) for s in range(6)] == [
        0.25, 0.5, 0.75, 1.0, 1.0, 1.0,
    ]  # fmt: skip
    step = Schedule(name="step", total_steps=100, gamma=0.1)
    assert [step.factor(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    assert Schedule(name="step", step_every=10, gamma=0.5).factor(25) == 0.25
    cosine = Schedule(name="cosine", warmup_steps=10, total_steps=110)
    assert cosine.factor(10) == 1.0
    assert cosine.factor(60) == pytest.approx(0.5)
    assert cosine.factor(110) == pytest.approx(0.0, abs=1e-12)


def test_the_recorded_learning_rate_follows_the_schedule(tmp_path: Path) -> None:
    config = _config(
        tmp_path, lr=0.1, lr_schedule="cosine", lr_warmup_steps=5, compressed_momentum=None
    )
    train(config, LocalCommunicator())
    schedule = Schedule(name="cosine", warmup_steps=5, total_steps=STEPS_PER_EPOCH)
    rates = [r["lr"] for r in _steps(tmp_path)]
    assert rates == pytest.approx([0.1 * schedule.factor(s) for s in range(STEPS_PER_EPOCH)])


def test_clipping_bounds_the_averaged_gradient(tmp_path: Path) -> None:
    config = _config(tmp_path, clip_grad_norm=1e-3, compression="none")
    trainer = build_trainer(config, LocalCommunicator(), torch.device("cpu"))
    norms = []
    original = trainer.optimizer.step

    def record_then_step() -> None:
        norms.append(float(torch.linalg.vector_norm(trainer.bridge.flat)))
        original()

    trainer.optimizer.step = record_then_step
    for start in range(0, 80, 16):
        trainer.train_step(np.arange(start, start + 16))
    assert len(norms) == 5 and max(norms) <= 1e-3 * (1 + 1e-5)


def test_max_steps_stops_and_still_evaluates(tmp_path: Path) -> None:
    summary = train(_config(tmp_path, epochs=5, max_steps=7), LocalCommunicator())
    assert summary["steps"] == 7 and len(_steps(tmp_path)) == 7
    assert math.isfinite(summary["test_loss"]) and summary["result"] == "trained"


def test_a_time_limit_stops_early_with_a_checkpoint(tmp_path: Path) -> None:
    summary = train(_config(tmp_path, epochs=50, time_limit=1.0), LocalCommunicator())
    assert 0 < summary["steps"] < 50 * STEPS_PER_EPOCH
    assert (tmp_path / "checkpoints" / f"step-{summary['steps']:08d}").is_dir()
    assert summary["result"] == "trained"


def test_accumulate_exchanges_once_per_k_micro_batches(tmp_path: Path) -> None:
    config = _config(tmp_path, accumulate=3, batch_size=8)
    trainer = build_trainer(config, LocalCommunicator(), torch.device("cpu"))
    calls = []
    original = trainer.exchange.average
    trainer.exchange.average = lambda *a, **k: calls.append(1) or original(*a, **k)
    local, _ = trainer.train_step([np.arange(0, 8), np.arange(8, 16), np.arange(16, 24)])
    assert len(calls) == 1 and local.count == 24
    summary = train(_config(tmp_path / "run", accumulate=3, batch_size=8), LocalCommunicator())
    assert summary["steps"] == math.ceil(math.ceil(1437 / 8) / 3)


def test_accumulating_two_halves_matches_one_batch(tmp_path: Path) -> None:
    """Dense and without momentum: K micro-batches of B/K give the step of one batch of B."""
    digests = []
    for accumulate, batch in ((1, 16), (2, 8)):
        config = _config(
            tmp_path / str(accumulate), compression="none", momentum=0.0, accumulate=accumulate
        )
        trainer = build_trainer(config, LocalCommunicator(), torch.device("cpu"))
        rows = np.arange(16)
        trainer.train_step([rows[i : i + batch] for i in range(0, 16, batch)])
        digests.append([p.detach().clone() for p in trainer.model.parameters()])
    for one, two in zip(*digests, strict=True):
        torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-7)


def test_eval_every_writes_eval_records(tmp_path: Path) -> None:
    train(_config(tmp_path, eval_every=30), LocalCommunicator())
    evals = [r for r in read_records(tmp_path / "metrics.jsonl") if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [30, 60, 90]
    assert all(0 <= r["test_accuracy"] <= 1 for r in evals)


def test_bf16_autocast_runs(tmp_path: Path) -> None:
    summary = train(_config(tmp_path, precision="bf16", max_steps=5), LocalCommunicator())
    assert summary["steps"] == 5 and math.isfinite(summary["test_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 on CUDA needs a CUDA GPU")
def test_bf16_on_cuda(tmp_path: Path) -> None:
    summary = train(_config(tmp_path, precision="bf16", max_steps=20), LocalCommunicator())
    assert summary["device"].startswith("cuda") and summary["result"] == "trained"


def test_the_final_model_loads_weights_only_and_starts_a_new_run(tmp_path: Path) -> None:
    first = train(_config(tmp_path / "a", max_steps=20), LocalCommunicator())
    saved = torch.load(first["model_file"], weights_only=True)
    assert saved["model"] == "mlp" and set(saved["state_dict"]) == {
        "1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias",
    }  # fmt: skip
    for source in (first["model_file"], str(tmp_path / "a")):
        config = _config(tmp_path / "b", init_from=source, lr=0.01)
        trainer = build_trainer(config, LocalCommunicator(), torch.device("cpu"))
        for name, tensor in trainer.model.state_dict().items():
            torch.testing.assert_close(tensor, saved["state_dict"][name], rtol=0, atol=0)
    assert parameter_digest(trainer.model) == first["param_digest"]


def test_init_from_a_checkpoint_directory(tmp_path: Path) -> None:
    config = _config(tmp_path / "a", max_steps=10, checkpoint_every=10)
    first = train(config, LocalCommunicator())
    checkpoint_dir = tmp_path / "a" / "checkpoints" / "step-00000010"
    trainer = build_trainer(
        _config(tmp_path / "b", init_from=str(checkpoint_dir)),
        LocalCommunicator(),
        torch.device("cpu"),
    )
    assert parameter_digest(trainer.model) == first["param_digest"]


def test_the_old_warmup_option_still_works_with_a_note(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADACOMP_")}
    args = ["--warmup-steps", "3", "--max-steps", "4", "--quiet", "--output-dir", str(tmp_path)]
    done = subprocess.run(
        [*train_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "--warmup-steps is now --dense-warmup-steps" in done.stderr
    steps = _steps(tmp_path)
    assert [r["density"] for r in steps[:3]] == [1.0, 1.0, 1.0] and steps[3]["density"] < 1


def test_each_zoo_model_carries_a_learning_rate_that_trains_it() -> None:
    from adacomp_mpi.models import MODELS, default_lr

    assert default_lr("mlp", "sgd") == 0.05 and default_lr("cnn", "sgd") == 0.01
    assert default_lr("char_lstm", "sgd") == 0.5 and default_lr("mlp", "adam") == 0.001
    assert default_lr("my_net.py:build", "sgd") == 0.05  # user models: the generic rate
    assert all(set(entry.lr) == {"sgd", "adam"} for entry in MODELS.values())


def test_a_changed_model_file_refuses_to_resume(tmp_path: Path) -> None:
    from adacomp_mpi.common.errors import UsageError

    source = tmp_path / "net.py"
    source.write_text(
        "from torch import nn\n\n"
        "def build(inputs, **options):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n"
    )
    model = f"{source}:build"
    train(_config(tmp_path / "run", model=model, max_steps=5, checkpoint_every=5),
          LocalCommunicator())  # fmt: skip
    source.write_text(source.read_text() + "# changed\n")
    with pytest.raises(UsageError, match=r"resume would change the training run \(model file"):
        train(_config(tmp_path / "run", model=model, resume="auto"), LocalCommunicator())


def test_the_fp16_loss_scale_halves_on_an_overflow_and_doubles_after_clean_steps() -> None:
    scale = LossScale(value=1024.0, growth_interval=3)
    scale.update(applied=False)
    assert scale.value == 512.0 and scale.clean_steps == 0
    for _ in range(3):
        scale.update(applied=True)
    assert scale.value == 1024.0 and scale.clean_steps == 0
    for _ in range(20):
        scale.update(applied=False)
    assert scale.value == 1.0  # never below 1: an overflow there is a real non-finite


def test_fp16_trains_with_true_gradients_in_the_codec_and_resumes_bit_identically(
    tmp_path: Path,
) -> None:
    straight = train(_config(tmp_path / "a", precision="fp16", epochs=2), LocalCommunicator())
    assert straight["test_accuracy"] > 0.6 and straight["skipped_steps"] <= 2  # chance: 0.1
    first = _config(tmp_path / "b", precision="fp16", checkpoint_every=1, checkpoint_unit="epochs")
    train(first, LocalCommunicator())
    again = _config(tmp_path / "b", precision="fp16", epochs=2, resume="auto")
    resumed = train(again, LocalCommunicator())
    assert resumed["param_digest"] == straight["param_digest"]
