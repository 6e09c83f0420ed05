"""Any classification data set the user saved as ``.npz`` with NumPy.

``path`` is the ``.npz`` file, or a directory holding exactly one. Required
arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test``; x is numeric with
shape (N, ...) and the same sample shape in both splits, y is (N,) of
non-negative integers. ``num_classes`` is the largest label + 1. Arrays are
read with ``allow_pickle=False`` after their headers are checked, so an object
array is refused by name, never unpickled.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from .base import ArrayDataset, DatasetError
from .files import SHOWN_BYTES, ZIP_MAGIC, brief, describe_start, resolve_path

KEYS = ("x_train", "y_train", "x_test", "y_test")
SHOWN_MEMBERS = 8  # of a wrong archive's members, in the "lacks arrays" message
# .npy format version -> its header reader (version 3.0 only differs for
# non-latin-1 field names, which numeric arrays do not have).
HEADER_READERS: dict[tuple[int, int], Callable[[IO[bytes]], tuple[Any, bool, np.dtype]]] = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


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


def _not_valid(path: Path, why: str) -> DatasetError:
    return DatasetError(f"npz: {path} is not a valid npz of numeric arrays: {why}")


def _dtype(handle: IO[bytes]) -> np.dtype:
    """The dtype in a .npy header, read without loading (or unpickling) the array."""
    version = np.lib.format.read_magic(handle)
    reader = HEADER_READERS.get(version)
    if reader is None:
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    return reader(handle)[2]


def _read_npy(archive: zipfile.ZipFile, member: str, read: Callable[[IO[bytes]], Any]) -> Any:
    with archive.open(member) as handle:
        return read(handle)


def _read_member(archive: zipfile.ZipFile, path: Path, key: str, member: str) -> np.ndarray:
    """One array: its header first, so an object array is refused before any load."""
    try:
        dtype = _read_npy(archive, member, _dtype)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _not_valid(path, f"{key!r} has no readable .npy header ({brief(error)})") from None
    if dtype.hasobject:
        raise _not_valid(path, f"{key!r} holds Python objects (dtype {dtype}), not numbers")
    try:
        return _read_npy(
            archive, member, lambda handle: np.lib.format.read_array(handle, allow_pickle=False)
        )
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _not_valid(path, f"{key!r} cannot be read ({brief(error)})") from None


def _not_a_zip(path: Path) -> str:
    """Why ``path`` does not open as a zip: cut short, or another kind of file."""
    with path.open("rb") as handle:
        start = handle.read(SHOWN_BYTES + 1)
    if start.startswith(ZIP_MAGIC):
        return "a truncated or damaged zip archive (its list of arrays is missing)"
    return f"not a zip archive (it {describe_start(start)})"


def _members(archive: zipfile.ZipFile) -> dict[str, str]:
    """Array name -> member name (np.savez adds ``.npy``; a hand-made zip may not)."""
    return {name.removesuffix(".npy"): name for name in archive.namelist()}


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        if not zipfile.is_zipfile(path):
            raise _not_valid(path, _not_a_zip(path))
        with zipfile.ZipFile(path) as archive:
            members = _members(archive)
            missing = [key for key in KEYS if key not in members]
            if missing:
                shown = brief(list(members)[:SHOWN_MEMBERS]) + (
                    " ..." if len(members) > SHOWN_MEMBERS else ""
                )
                raise DatasetError(f"npz: {path} lacks arrays {missing} (has {shown})")
            return {key: _read_member(archive, path, key, members[key]) for key in KEYS}
    except (OSError, zipfile.BadZipFile) as error:
        raise DatasetError(f"npz: cannot read {path}: {brief(error)}") from None


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
