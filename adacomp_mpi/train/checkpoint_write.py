"""Writing checkpoints: rank 0 writes every rank's state, atomically.

Rank 0 writes everything: the other ranks send it their state one at a time
and each is written as it arrives, so no shared filesystem is assumed. The
directory is written under a temporary name, fsynced, and renamed, so a crash
leaves either the previous checkpoint or the new one; a write that fails (a
full disk) leaves the previous ones as they were, on every rank alike.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from adacomp_mpi.common.files import atomic_write_bytes
from adacomp_mpi.dist.communicator import Communicator

from .checkpoint import (
    COMMON,
    FORMAT_VERSION,
    MANIFEST,
    CheckpointError,
    checkpoint_dirs,
    latest,
    rank_file,
)


def _serialise(value: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Staging:
    """A checkpoint directory being written under a temporary name."""

    def __init__(self, root: Path, step: int) -> None:
        self.root, self.step = root, step
        self.path = root / f".step-{step:08d}.tmp-{os.getpid()}"
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        self.digests: dict[str, str] = {}

    def add(self, name: str, value: dict[str, Any]) -> None:
        data = _serialise(value)
        atomic_write_bytes(self.path / name, data)
        self.digests[name] = hashlib.sha256(data).hexdigest()

    def commit(self, world_size: int) -> Path:
        """Write the manifest last, then move the directory into place."""
        manifest = {
            "format_version": FORMAT_VERSION,
            "step": self.step,
            "world_size": world_size,
            "sha256": self.digests,
        }
        atomic_write_bytes(self.path / MANIFEST, json.dumps(manifest, indent=2).encode())
        _fsync_dir(self.path)
        final = self.root / f"step-{self.step:08d}"
        if final.exists():
            shutil.rmtree(final)
        self.path.rename(final)
        _fsync_dir(self.root)
        return final


def _prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and staging directories
    that a crashed writer left behind (only rank 0 of one job writes here)."""
    stale = [p for p in root.glob(".step-*.tmp-*") if p.is_dir()]
    for old in [*sorted(checkpoint_dirs(root))[:-keep], *stale]:
        shutil.rmtree(old, ignore_errors=True)


def save(
    root: Path,
    *,
    comm: Communicator,
    step: int,
    common: dict[str, Any],
    rank_state: dict[str, Any],
    keep: int,
) -> Path:
    """Collective: every rank calls it; rank 0 writes; returns the directory.

    If rank 0 cannot write (a full disk, a vanished directory), every rank
    raises the same CheckpointError and the checkpoints already there stay
    as they were: nothing is pruned until a new one is in place.
    """
    if comm.rank != 0:
        comm.send_object(rank_state, dest=0)
        outcome = comm.broadcast_object(None)
    else:
        outcome = _write(root, comm=comm, step=step, common=common, rank_state=rank_state)
        if not outcome.startswith(WRITE_FAILED):
            _prune(root, keep)
        comm.broadcast_object(outcome)
    if outcome.startswith(WRITE_FAILED):
        raise CheckpointError(outcome[len(WRITE_FAILED) :])
    return Path(outcome)


WRITE_FAILED = "\0failed: "  # marks an error message where a path would be


def _write(
    root: Path, *, comm: Communicator, step: int, common: dict[str, Any], rank_state: dict
) -> str:
    """Rank 0: the new checkpoint's path, or WRITE_FAILED + why. Receives every
    rank's state even after a failure, so no sender is left waiting."""
    staging, failure = None, None
    try:
        staging = _Staging(root, step)
        staging.add(COMMON, common)
        staging.add(rank_file(0), rank_state)
    except OSError as error:
        failure = error
    for rank in range(1, comm.size):
        state = comm.recv_object(source=rank)
        if failure is None:
            try:
                staging.add(rank_file(rank), state)
            except OSError as error:
                failure = error
    if failure is None:
        try:
            return str(staging.commit(comm.size))
        except OSError as error:
            failure = error
    if staging is not None:
        shutil.rmtree(staging.path, ignore_errors=True)
    previous = latest(root)
    kept = f"the previous checkpoint {previous} is intact" if previous else "no checkpoint kept"
    reason = failure.strerror or str(failure)
    return f"{WRITE_FAILED}cannot write checkpoint step-{step:08d} under {root}: {reason}; {kept}"
