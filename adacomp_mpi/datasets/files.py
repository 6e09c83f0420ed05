"""File helpers shared by the loaders: default locations, lookup, one-line errors.

A message never quotes a file's content: a wrong file (an .npz given as a CSV)
would put raw bytes on the terminal. ``describe_start`` names a file by its
first bytes, and ``brief`` tames a parser's message, which may quote content.

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
ZIP_MAGIC = b"PK\x03\x04"
SHOWN_BYTES = 16  # of a file's start, in hex, when a message must say what it is
BRIEF_CHARS = 120  # of a parser's message quoted in ours
# Leading bytes -> what such a file is, for "not a CSV text file (...)" messages.
SIGNATURES: dict[bytes, str] = {
    ZIP_MAGIC: "a zip archive, e.g. .npz",
    b"\x93NUMPY": "a .npy array",
    GZIP_MAGIC: "gzip data",
    b"\x89PNG": "a PNG image",
    **{bytes([0x80, protocol]): "a pickle" for protocol in range(2, 6)},
    b"\x00\x00\x08": "an IDX file",
}


def one_line(text: object) -> str:
    """Collapse whitespace so an error message always fits on one line."""
    return " ".join(str(text).split())


def brief(text: object, limit: int = BRIEF_CHARS) -> str:
    """``one_line``, printable ASCII only (others as \\xNN), cut to ``limit``
    characters: numpy's and gzip's messages quote the offending content."""
    line = one_line(text)
    shown = "".join(c if c.isascii() and c.isprintable() else f"\\x{ord(c):02x}" for c in line)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def kind_of(data: bytes) -> str | None:
    """What a binary file is, judged by its leading bytes (None: not a known kind)."""
    return next((kind for magic, kind in SIGNATURES.items() if data.startswith(magic)), None)


def describe_start(data: bytes) -> str:
    """``starts with 50 4b 03 04 ...: a zip archive, e.g. .npz``: at most 16 bytes, in hex."""
    if not data:
        return "is empty"
    kind = kind_of(data)
    more = " ..." if len(data) > SHOWN_BYTES else ""
    return f"starts with {data[:SHOWN_BYTES].hex(' ')}{more}" + (f": {kind}" if kind else "")


def require_text(data: bytes, *, source: str, expected: str) -> None:
    """DatasetError unless ``data`` may be text: a NUL byte or a binary file's
    signature means the wrong file, whose bytes a parser would quote back."""
    if b"\x00" in data or kind_of(data) is not None:
        raise DatasetError(f"{source} is not {expected} (it {describe_start(data)})")


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
        raise DatasetError(f"{what}: cannot read {path}: {brief(error)}") from None
