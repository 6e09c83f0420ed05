"""CIFAR-10 from the "python version" batches, read with a restricted unpickler.

``path`` is the ``cifar-10-batches-py`` directory (``data_batch_1`` .. ``data_batch_5``,
``test_batch``) or a directory containing it. The batches are pickles, and a
pickle can run arbitrary code, so the unpickler resolves only the handful of
globals that a dict of NumPy arrays, lists and byte strings needs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import ArrayDataset, DatasetError
from .files import brief, resolve_path

try:  # NumPy >= 2 moved the pickling helpers to numpy._core (old names still in old pickles).
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SUBDIR = "cifar-10-batches-py"
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to what protocol-2 pickles of bytes use (latin-1)."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return text.encode("latin1")


_BUILTINS: dict[str, Any] = {"dict": dict, "list": list, "bytes": bytes, "str": str, "int": int}
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        (module, key): value
        for module in ("builtins", "__builtin__")
        for key, value in _BUILTINS.items()
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``ALLOWED_GLOBALS``; anything else (os.system, eval, ...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` (Python 2 byte strings stay bytes) without running foreign code."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"cifar10: batch file {path} not found")
    try:
        batch = restricted_loads(path.read_bytes())
    except DatasetError:
        raise
    except Exception as error:  # any unpickling failure means a corrupt or hostile file
        raise DatasetError(f"cifar10: cannot unpickle {path}: {brief(error)}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"cifar10: {path} is not a CIFAR-10 batch (needs b'data' and b'labels')")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"cifar10: {path}: b'data' must be a uint8 (N, 3072) array")
    if data.shape[1] != int(np.prod(IMAGE_SHAPE)):
        raise DatasetError(f"cifar10: {path}: b'data' has {data.shape[1]} columns, expected 3072")
    try:
        label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetError(f"cifar10: {path}: b'labels' must be a list of integers") from None
    if len(label_array) != len(data):
        raise DatasetError(f"cifar10: {path}: {len(data)} images but {len(label_array)} labels")
    if len(label_array) and (label_array.min() < 0 or label_array.max() >= NUM_CLASSES):
        raise DatasetError(f"cifar10: {path}: labels must lie in 0..9")
    return data, label_array


def _stack(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(p) for p in paths]
    pixels = np.concatenate([d for d, _ in parts]).reshape(-1, *IMAGE_SHAPE).astype(np.float32)
    pixels /= np.float32(255.0)
    return pixels, np.concatenate([y for _, y in parts])


def load_cifar10(path: Path | None = None) -> ArrayDataset:
    """CIFAR-10 (50k/10k), x float32 (N, 3, 32, 32) in 0..1; default ``<data>/cifar10``."""
    directory = resolve_path(path, "cifar10")
    if (directory / SUBDIR).is_dir():
        directory = directory / SUBDIR
    if not directory.is_dir():
        raise DatasetError(f"cifar10: directory {directory} not found")
    x_train, y_train = _stack([directory / name for name in TRAIN_BATCHES])
    x_test, y_test = _stack([directory / TEST_BATCH])
    return ArrayDataset(
        name="cifar10",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=NUM_CLASSES,
    )
