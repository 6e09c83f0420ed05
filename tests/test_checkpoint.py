"""adacomp_mpi.checkpoint with a world of one: layout, round trip, pruning,
atomicity, and refusal of corrupted, foreign or malicious checkpoints."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from adacomp_mpi.common.errors import UsageError
from adacomp_mpi.dist.communicator import LocalCommunicator
from adacomp_mpi.train import checkpoint, checkpoint_write
from adacomp_mpi.train.checkpoint import CheckpointError

COMM = LocalCommunicator()


def common_state(step: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(step)
    return {
        "model": {"0.weight": torch.randn(4, 3, generator=generator), "0.bias": torch.zeros(4)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.05, "params": [0, 1]}]},
        "ledger": {"position": {"step": step, "epoch": 0, "batch": step}},
        "config": {"seed": 0, "model": "mlp"},
    }


def rank_state(step: int) -> dict[str, Any]:
    return {
        "codec": {"residues": {"0.weight": torch.full((12,), float(step))}},
        "torch_rng": torch.get_rng_state(),
    }


def save(root: Path, step: int, *, keep: int = 3) -> Path:
    return checkpoint_write.save(
        root,
        comm=COMM,
        step=step,
        common=common_state(step),
        rank_state=rank_state(step),
        keep=keep,
    )


def assert_same(left: Any, right: Any) -> None:
    """Equal nested dicts/lists whose leaves may be tensors."""
    if isinstance(left, torch.Tensor):
        assert isinstance(right, torch.Tensor) and torch.equal(left, right)
    elif isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys()
        for key in left:
            assert_same(left[key], right[key])
    elif isinstance(left, list | tuple):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            assert_same(a, b)
    else:
        assert left == right


def test_save_writes_the_documented_layout(tmp_path: Path) -> None:
    path = save(tmp_path, 120)
    assert path == tmp_path / "step-00000120"
    assert sorted(p.name for p in path.iterdir()) == ["common.pt", "manifest.json", "rank-00000.pt"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == checkpoint.FORMAT_VERSION
    assert (manifest["step"], manifest["world_size"]) == (120, 1)
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest
    assert sorted(manifest["sha256"]) == ["common.pt", "rank-00000.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000120"]  # no staging left over


def test_round_trip(tmp_path: Path) -> None:
    path = save(tmp_path, 7)
    assert checkpoint.latest(tmp_path) == path
    common, mine = checkpoint.load(path, comm=COMM)
    assert_same(common, common_state(7))
    assert_same(mine, rank_state(7))


def test_saving_the_same_step_again_replaces_it(tmp_path: Path) -> None:
    save(tmp_path, 5)
    path = checkpoint_write.save(
        tmp_path, comm=COMM, step=5, common=common_state(6), rank_state=rank_state(6), keep=3
    )
    common, _ = checkpoint.load(path, comm=COMM)
    assert_same(common, common_state(6))
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000005"]


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keeps_only_the_newest_k(tmp_path: Path, keep: int) -> None:
    for step in (10, 20, 30, 40, 50):
        save(tmp_path, step, keep=keep)
    expected = [f"step-{s:08d}" for s in (10, 20, 30, 40, 50)[-keep:]]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    assert checkpoint.latest(tmp_path) == tmp_path / "step-00000050"


def test_latest_of_nothing_is_none(tmp_path: Path) -> None:
    assert checkpoint.latest(tmp_path / "missing") is None
    assert checkpoint.latest(tmp_path) is None


def test_latest_ignores_staging_incomplete_and_foreign_directories(tmp_path: Path) -> None:
    good = save(tmp_path, 20)
    # A crash while writing step 30 leaves its staging directory (complete or not).
    staging = tmp_path / ".step-00000030.tmp-12345"
    staging.mkdir()
    for item in good.iterdir():
        (staging / item.name).write_bytes(item.read_bytes())
    # A step directory whose manifest never got written.
    no_manifest = tmp_path / "step-00000040"
    no_manifest.mkdir()
    (no_manifest / "common.pt").write_bytes((good / "common.pt").read_bytes())
    # One whose manifest is garbage, one of another format, and stray names.
    garbage = tmp_path / "step-00000050"
    garbage.mkdir()
    (garbage / "manifest.json").write_text('{"format_version": 1, "sha')
    future = tmp_path / "step-00000060"
    future.mkdir()
    (future / "manifest.json").write_text(json.dumps({"format_version": 99, "sha256": {}}))
    (tmp_path / "step-00000070").write_text("a file, not a directory")
    (tmp_path / "step-80").mkdir()
    assert checkpoint.latest(tmp_path) == good


def test_a_crash_before_the_manifest_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = save(tmp_path, 10)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    real_write = checkpoint_write.atomic_write_bytes

    def crash_on_manifest(path: Path, data: bytes) -> None:
        if path.name == checkpoint.MANIFEST:
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(checkpoint_write, "atomic_write_bytes", crash_on_manifest)
    with pytest.raises(CheckpointError) as failed:
        save(tmp_path, 20)
    assert str(failed.value) == (
        f"cannot write checkpoint step-00000020 under {tmp_path}: No space left on device; "
        f"the previous checkpoint {previous} is intact"
    )
    monkeypatch.undo()
    assert not (tmp_path / "step-00000020").exists()
    assert not list(tmp_path.glob(".step-*"))  # the staging directory is gone too
    assert checkpoint.latest(tmp_path) == previous
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    common, _ = checkpoint.load(previous, comm=COMM)
    assert common["ledger"]["position"]["step"] == 10


# -- refusals ----------------------------------------------------------------


def _rewrite_manifest(path: Path, **changes: Any) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _flip(path: Path) -> None:
    target = path / "rank-00000.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))


def _unlist_rank_file(path: Path) -> None:
    digests = json.loads((path / "manifest.json").read_text())["sha256"]
    _rewrite_manifest(path, sha256={"common.pt": digests["common.pt"]})


class Evil:
    """Pickles into a call of os.system."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.sentinel}",))


def _malicious(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"model": Evil(path.parent / "SENTINEL")}, buffer)
    data = buffer.getvalue()
    (path / "common.pt").write_bytes(data)
    digests = json.loads((path / "manifest.json").read_text())["sha256"]
    _rewrite_manifest(path, sha256={**digests, "common.pt": hashlib.sha256(data).hexdigest()})


REFUSALS = {
    "flipped bit": (_flip, "rank-00000.pt is corrupted (checksum mismatch)"),
    "truncated file": (
        lambda p: (p / "common.pt").write_bytes((p / "common.pt").read_bytes()[:100]),
        "common.pt is corrupted (checksum mismatch)",
    ),
    "missing file": (lambda p: (p / "rank-00000.pt").unlink(), "cannot read rank-00000.pt"),
    "file not in the manifest": (
        _unlist_rank_file,
        "rank-00000.pt is corrupted (checksum mismatch)",
    ),
    "no manifest": (lambda p: (p / "manifest.json").unlink(), "no readable manifest"),
    "manifest not JSON": (
        lambda p: (p / "manifest.json").write_text("step: 1\n"),
        "no readable manifest",
    ),
    "other format version": (
        lambda p: _rewrite_manifest(p, format_version=99),
        "format version 99, this adacomp-train reads only version 2",
    ),
    "the format before the layout change": (
        lambda p: _rewrite_manifest(p, format_version=1),
        "format version 1, this adacomp-train reads only version 2; resume it with the release",
    ),
    "malformed manifest": (lambda p: _rewrite_manifest(p, sha256=[]), "malformed manifest"),
    "other world size": (
        lambda p: _rewrite_manifest(p, world_size=4),
        "was written by 4 ranks; resume it with exactly that many (this job has 1)",
    ),
    "malicious pickle, checksum matching": (_malicious, "common.pt cannot be loaded safely"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_checkpoints_are_refused_in_one_line(tmp_path: Path, case: str) -> None:
    damage, message = REFUSALS[case]
    path = save(tmp_path / "checkpoints", 3)
    damage(path)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.iterdir()}
    with pytest.raises(CheckpointError) as caught:
        checkpoint.load(path, comm=COMM)
    text = str(caught.value)
    assert message in text
    assert text.startswith(f"checkpoint {path}")
    assert "\n" not in text
    assert isinstance(caught.value, UsageError)  # the CLI turns it into exit code 2
    assert not (tmp_path / "checkpoints" / "SENTINEL").exists()
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.iterdir()} == before


def test_weights_only_refusal_names_the_global_not_the_unsafe_workaround(tmp_path: Path) -> None:
    path = save(tmp_path, 1)
    _malicious(path)
    with pytest.raises(CheckpointError) as caught:
        checkpoint.load(path, comm=COMM)
    assert "system" in str(caught.value)
    assert "weights_only=False" not in str(caught.value)
    assert "GLOBAL posix.system" in str(caught.value)
    assert not (tmp_path / "SENTINEL").exists()


# -- --resume given something that is not a checkpoint -----------------------

WHAT_TO_GIVE = "give a checkpoint directory (OUTPUT_DIR/checkpoints/step-NNNNNNNN) or 'auto'"


def _refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        checkpoint.load(path, comm=COMM)
    text = str(caught.value)
    assert "\n" not in text and "Errno" not in text, text
    return text


def test_a_mistyped_resume_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _refusal(Path("atuo")) == (
        f"no checkpoint at 'atuo' (did you mean 'auto'?); {WHAT_TO_GIVE}"
    )
    assert _refusal(Path("runs/gone")) == f"no checkpoint at 'runs/gone'; {WHAT_TO_GIVE}"
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert _refusal(Path("notes.txt")) == (
        f"checkpoint notes.txt is a file, not a checkpoint directory; {WHAT_TO_GIVE}"
    )


def test_a_run_directory_points_to_auto_and_its_newest_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save(run / "checkpoints", 10)
    newest = save(run / "checkpoints", 20)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert _refusal(run) == (
        f"{run} is a run directory, not a checkpoint; use --resume auto with "
        f"--output-dir {run}, or --resume {newest} (its newest checkpoint)"
    )
    assert _refusal(run / "checkpoints") == (
        f"{run / 'checkpoints'} holds checkpoints but is not one; use --resume auto with "
        f"--output-dir {run}, or --resume {newest} (the newest)"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_a_run_directory_without_checkpoints_says_auto_starts_fresh(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    text = _refusal(tmp_path / "run")
    assert text.startswith(f"{tmp_path / 'run'} is a run directory, not a checkpoint, and ")
    assert "holds no readable checkpoint; use --resume auto with --output-dir" in text


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def _state_of_size(nbytes: int) -> dict[str, Any]:
    return {
        "codec": {"residues": {"w": torch.ones(nbytes // 4)}},
        "torch_rng": torch.get_rng_state(),
    }


def test_a_full_filesystem_fails_clearly_and_the_previous_checkpoint_loads(
    tiny_filesystem: Path,
) -> None:
    root = tiny_filesystem / "checkpoints"
    first = checkpoint_write.save(
        root,
        comm=COMM,
        step=10,
        common=common_state(10),
        rank_state=_state_of_size(300_000),
        keep=3,
    )
    with pytest.raises(CheckpointError, match="No space left on device") as failed:
        checkpoint_write.save(
            root,
            comm=COMM,
            step=20,
            common=common_state(20),
            rank_state=_state_of_size(800_000),
            keep=3,
        )
    assert str(failed.value).startswith(f"cannot write checkpoint step-00000020 under {root}: ")
    assert str(failed.value).endswith(f"the previous checkpoint {first} is intact")
    assert checkpoint.latest(root) == first
    assert sorted(p.name for p in root.iterdir()) == ["step-00000010"]
    common, state = checkpoint.load(first, comm=COMM)
    assert common["ledger"]["position"]["step"] == 10
    assert state["codec"]["residues"]["w"].numel() == 75_000
