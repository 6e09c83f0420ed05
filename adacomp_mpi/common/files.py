"""Crash-safe file writes: a reader sees the old file or the new one, never half.

Files end with the mode an ordinary ``open`` would give them (0o666 less the
umask, e.g. 0644), not the 0600 of ``tempfile.mkstemp``, so a group can read
a run's outputs as usual.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FILE_MODE = 0o666


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def atomic_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` (a path relative to the link's directory),
    replacing an older link in one rename: a reader never finds it missing."""
    link.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        tmp = link.parent / f".{link.name}.{os.getpid()}.{attempt}.tmp"
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(f"cannot create a temporary link next to {link}")
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_fresh_dir(parent: Path, name: str) -> Path:
    """Create ``parent/name`` (or ``name-2``, ``name-3``... if taken) and return it."""
    parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(1, 1000):
        candidate = parent / (name if suffix == 1 else f"{name}-{suffix}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise OSError(f"no free directory name {name}-N under {parent}")


def check_writable_dir(path: Path) -> str | None:
    """None if ``path`` can hold our outputs, else a one-line reason."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
            pass
    except OSError as error:
        return f"output directory {path} is not writable: {error.strerror or error}"
    return None
