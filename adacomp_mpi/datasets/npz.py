"""Any classification data set the user saved as ``.npz`` with NumPy.

``path`` is the ``.npz`` file, or a directory holding exactly one. Required
arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test``; x is numeric with
shape (N, ...) and the same sample shape in both splits, y is (N,) of
non-negative integers. ``num_classes`` is the largest label + 1. The file is
opened with ``allow_pickle=False``, so object arrays are rejected, not run.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .base import ArrayDataset, DatasetError
from .files import one_line, resolve_path

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        if len(found) != 1:
            names = [p.name for p in found]
            raise DatasetError(f"npz: {path} must hold exactly one .npz file, found {names}")
        return found[0]
    raise DatasetError(f"npz: {path} not found (expected a .npz file or a directory with one)")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise DatasetError(f"npz: {path} lacks arrays {missing} (has {archive.files})")
            return {key: archive[key] for key in KEYS}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(f"npz: cannot read {path}: {one_line(error)}") from None


def _check_split(x: np.ndarray, y: np.ndarray, split: str, source: Path) -> None:
    if x.ndim < 2 or len(x) == 0:
        raise DatasetError(f"npz: {source}: x_{split} must be a non-empty (N, ...) array")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DatasetError(f"npz: {source}: x_{split} must be numeric, not {x.dtype}")
    if y.ndim != 1 or len(y) != len(x):
        raise DatasetError(f"npz: {source}: y_{split} must have shape ({len(x)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"npz: {source}: y_{split} must hold integers, not {y.dtype}")
    if y.min() < 0:
        raise DatasetError(f"npz: {source}: y_{split} has negative label {y.min()}")


def load_npz(path: Path | None = None) -> ArrayDataset:
    """A user's own classification arrays; default ``<data>/npz`` (a dir with one .npz)."""
    source = _npz_file(resolve_path(path, "npz"))
    arrays = _read_arrays(source)
    for split in ("train", "test"):
        _check_split(arrays[f"x_{split}"], arrays[f"y_{split}"], split, source)
    x_train, x_test = (arrays[k].astype(np.float32) for k in ("x_train", "x_test"))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"npz: {source}: sample shapes differ: {x_train.shape[1:]} vs {x_test.shape[1:]}"
        )
    if not (np.all(np.isfinite(x_train)) and np.all(np.isfinite(x_test))):
        raise DatasetError(f"npz: {source}: x arrays contain NaN or infinity")
    y_train, y_test = (arrays[k].astype(np.int64) for k in ("y_train", "y_test"))
    return ArrayDataset(
        name="npz",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
    )
