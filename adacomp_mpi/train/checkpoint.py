"""Checkpoints that survive crashes, restore every rank's AdaComp residues, and
refuse corrupted or foreign files.

Layout (one directory per checkpoint, under OUTPUT_DIR/checkpoints/)::

    step-00000120/
        common.pt        model, optimizer, position, config (same on all ranks)
        rank-00000.pt    rank 0's residues and RNG state
        rank-00001.pt    ...
        manifest.json    format version, world size, step, SHA-256 of each file

This module is the format and the reading side (``checkpoint_write`` writes).
Files are loaded with ``torch.load(weights_only=True)`` after their checksums
match.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adacomp_mpi.common.errors import UsageError
from adacomp_mpi.dist.communicator import Communicator

from .config import CHECKPOINTS_DIR

# 2: rank files hold only the residues and the RNG state (version 1 also held
# codec counters and byte totals that nothing read).
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
COMMON = "common.pt"
STEP_DIR = re.compile(r"^step-(\d{8})$")
RUN_CHECKPOINTS = CHECKPOINTS_DIR
AUTO = "auto"
WHAT_TO_GIVE = (
    f"give a checkpoint directory (OUTPUT_DIR/{RUN_CHECKPOINTS}/step-NNNNNNNN) or {AUTO!r}"
)


class CheckpointError(UsageError):
    """A checkpoint is missing, corrupted, of another format, or for another job."""


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.pt"


def checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def _read_verified(path: Path, name: str, digests: dict[str, str]) -> dict[str, Any]:
    try:
        data = (path / name).read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {path}: cannot read {name}: {error.strerror}") from None
    if hashlib.sha256(data).hexdigest() != digests.get(name):
        raise CheckpointError(f"checkpoint {path}: {name} is corrupted (checksum mismatch)")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as error:  # any unpickling failure means an unusable file
        raise CheckpointError(
            f"checkpoint {path}: {name} cannot be loaded safely: {_load_failure(error)}"
        ) from None


def _load_failure(error: Exception) -> str:
    """One line on why ``torch.load`` refused a file.

    torch's weights-only refusals span paragraphs and advise retrying with
    ``weights_only=False``, the one thing never to do with a doubtful file;
    keep only the line naming the refused global.
    """
    lines = [" ".join(line.split()) for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line]
    return (named or lines or [type(error).__name__])[0]


def _missing(path: Path) -> str:
    close = difflib.get_close_matches(str(path).lower(), [AUTO], n=1)
    maybe = f" (did you mean {AUTO!r}?)" if close else ""
    return f"no checkpoint at {str(path)!r}{maybe}; {WHAT_TO_GIVE}"


def _a_file(path: Path) -> str:
    return f"checkpoint {path} is a file, not a checkpoint directory; {WHAT_TO_GIVE}"


def _run_directory(path: Path) -> str:
    root = path / RUN_CHECKPOINTS
    newest = latest(root)
    if newest is None:
        return (
            f"{path} is a run directory, not a checkpoint, and {root} holds no readable "
            f"checkpoint; use --resume {AUTO} with --output-dir {path} (it starts fresh "
            "while there is none)"
        )
    return (
        f"{path} is a run directory, not a checkpoint; use --resume {AUTO} with "
        f"--output-dir {path}, or --resume {newest} (its newest checkpoint)"
    )


def _checkpoints_directory(path: Path) -> str:
    newest = latest(path)
    if newest is None:
        return f"{path} holds step-* directories but none with a readable manifest; {WHAT_TO_GIVE}"
    auto = f"--resume {AUTO} with --output-dir {path.parent}, or "
    return (
        f"{path} holds checkpoints but is not one; use "
        f"{auto if path.name == RUN_CHECKPOINTS else ''}--resume {newest} (the newest)"
    )


# What a path without a manifest is instead of a checkpoint, tested in order,
# each with the one-line advice for it: a mistyped --resume or a run directory
# are the usual causes, and "no manifest" alone does not say what to give.
NOT_A_CHECKPOINT: tuple[tuple[Callable[[Path], bool], Callable[[Path], str]], ...] = (
    (lambda path: not path.exists(), _missing),
    (lambda path: not path.is_dir(), _a_file),
    (lambda path: (path / RUN_CHECKPOINTS).is_dir(), _run_directory),
    (lambda path: bool(checkpoint_dirs(path)), _checkpoints_directory),
)


def _no_manifest(path: Path, error: Exception) -> str:
    """Why ``path`` has no readable manifest, and what to give instead."""
    for applies, explain in NOT_A_CHECKPOINT:
        if applies(path):
            return explain(path)
    return f"checkpoint {path}: no readable manifest ({error})"


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest, checked for format and shape; CheckpointError otherwise."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(_no_manifest(path, error)) from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"checkpoint {path}: malformed manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {version!r}, this adacomp-train reads only "
            f"version {FORMAT_VERSION}; resume it with the release that wrote it, or start fresh"
        )
    if not isinstance(manifest.get("sha256"), dict) or not isinstance(
        manifest.get("world_size"), int
    ):
        raise CheckpointError(f"checkpoint {path}: malformed manifest")
    return manifest


def read_common(path: Path) -> dict[str, Any]:
    """What every rank shares (model, optimizer, ledger, config), checked; for
    reading one checkpoint's weights without resuming it."""
    manifest = read_manifest(path)
    return _read_verified(path, COMMON, manifest["sha256"])


def latest(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` whose manifest reads, if any."""
    for candidate in reversed(checkpoint_dirs(root)):
        try:
            read_manifest(candidate)
        except CheckpointError:
            continue
        return candidate
    return None


def load(path: Path, *, comm: Communicator) -> tuple[dict[str, Any], dict[str, Any]]:
    """Collective: (common state, this rank's state), read and checked by rank 0.

    A checkpoint from a different world size is refused: residues belong to
    the rank that accumulated them and are not re-split silently.
    """
    error, common = None, None
    if comm.rank == 0:
        try:
            manifest = read_manifest(path)
            if manifest["world_size"] != comm.size:
                raise CheckpointError(
                    f"checkpoint {path} was written by {manifest['world_size']} ranks; "
                    f"resume it with exactly that many (this job has {comm.size})"
                )
            digests = manifest["sha256"]
            common = _read_verified(path, COMMON, digests)
            states = [_read_verified(path, rank_file(r), digests) for r in range(comm.size)]
        except CheckpointError as failure:
            error = str(failure)
    error = comm.broadcast_object(error)
    if error:
        raise CheckpointError(error)
    common = comm.broadcast_object(common)
    if comm.rank == 0:
        for rank in range(1, comm.size):
            comm.send_object(states[rank], dest=rank)
        return common, states[0]
    return common, comm.recv_object(source=0)
