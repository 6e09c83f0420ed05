"""UCI optdigits (8x8 handwritten digits), embedded in the package."""

from __future__ import annotations

import gzip
import io
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from .base import ArrayDataset, DatasetError
from .files import GZIP_MAGIC, brief, describe_start, require_text

DIGITS_TEST_SIZE = 360  # fixed held-out tail of a fixed permutation (20 %)
DIGITS_SPLIT_SEED = 1797


def _gunzip(path: Path) -> bytes:
    """The CSV text of a gzip file; a file of another kind is named by its first
    bytes, never quoted (gzip's own message would show them raw)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read digits CSV {path}: {brief(error)}") from None
    if raw[:2] != GZIP_MAGIC:
        raise DatasetError(f"digits: {path} is not a gzip file (it {describe_start(raw)})")
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"cannot read digits CSV {path}: {brief(error)}") from None


def _read_csv_gz(path: Path) -> np.ndarray:
    text = _gunzip(path)
    require_text(text, source=f"digits: {path}", expected="a gzipped CSV text file")
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as error:
        raise DatasetError(f"cannot read digits CSV {path}: {brief(error)}") from None
    if table.shape[1] != 65:
        raise DatasetError(f"{path}: expected 65 columns (64 pixels + label), got {table.shape[1]}")
    return table


def load_digits(path: Path | None = None) -> ArrayDataset:
    """Load optdigits; ``path`` overrides the embedded copy.

    Pixels are scaled from 0..16 to 0..1. The split is a fixed permutation
    (seed 1797) whose last 360 rows are the test set, the same on every rank.
    """
    if path is None:
        with resources.as_file(resources.files("adacomp_mpi") / "data" / "optdigits.csv.gz") as p:
            table = _read_csv_gz(p)
    else:
        table = _read_csv_gz(Path(path))
    labels = table[:, -1].astype(np.int64)
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetError("digits labels must lie in 0..9")
    pixels = table[:, :-1] / np.float32(16.0)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(table))
    train, test = order[:-DIGITS_TEST_SIZE], order[-DIGITS_TEST_SIZE:]
    return ArrayDataset(
        name="digits",
        x_train=np.ascontiguousarray(pixels[train]),
        y_train=labels[train],
        x_test=np.ascontiguousarray(pixels[test]),
        y_test=labels[test],
        num_classes=10,
    )
