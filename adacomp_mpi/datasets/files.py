"""File helpers shared by the loaders: default locations, lookup, one-line errors.

Loaders only ever read local files; fetching happens at set-up time
(``scripts/fetch_datasets.sh``), never at run time.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

from .base import DatasetError

DATA_DIR_ENV = "ADACOMP_DATA_DIR"
DEFAULT_DATA_DIR = "data"
GZIP_MAGIC = b"\x1f\x8b"


def one_line(text: object) -> str:
    """Collapse whitespace so an error message always fits on one line."""
    return " ".join(str(text).split())


def data_root() -> Path:
    """``$ADACOMP_DATA_DIR`` if set, else ``./data`` (relative to the working directory)."""
    return Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))


def resolve_path(path: Path | str | None, name: str) -> Path:
    """The path a loader reads: the one given, else ``<data_root>/<name>``."""
    return data_root() / name if path is None else Path(path)


def find_file(directory: Path, candidates: Sequence[str], *, what: str) -> Path:
    """The first of ``candidates`` present in ``directory``; DatasetError naming them all."""
    if not directory.is_dir():
        raise DatasetError(f"{what}: directory {directory} not found")
    for candidate in candidates:
        if (directory / candidate).is_file():
            return directory / candidate
    raise DatasetError(f"{what}: none of {list(candidates)} found in {directory}")


def file_or_member(path: Path, filename: str, *, what: str) -> Path:
    """``path`` itself if it is a file, else ``path/filename``; DatasetError if neither exists."""
    if path.is_file():
        return path
    if path.is_dir():
        return find_file(path, [filename], what=what)
    raise DatasetError(f"{what}: {path} not found (expected {filename} or a directory holding it)")


def read_bytes(path: Path, *, what: str) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{what}: cannot read {path}: {one_line(error)}") from None
