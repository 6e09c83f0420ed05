"""MNIST and Fashion-MNIST from IDX files (the format LeCun's site and Zalando ship).

``path`` is a directory holding the four standard files, gzipped or not:
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` (each optionally ending in ``.gz``; the common
``train-images.idx3-ubyte`` spelling is accepted too).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .base import ArrayDataset, DatasetError
from .files import find_file, read_bytes, resolve_path

# IDX type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/).
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
IMAGE_SIDE = 28
NUM_CLASSES = 10


def parse_idx(data: bytes, *, source: str) -> np.ndarray:
    """Decode one IDX blob; DatasetError on a bad magic, a size mismatch or trailing bytes."""
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise DatasetError(f"{source}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise DatasetError(f"{source}: unknown IDX element type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{source}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise DatasetError(
            f"{source}: IDX file {kind} ({len(data)} bytes, shape {shape} needs {expected})"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _read_split(directory: Path, prefix: str, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    names = []
    for kind, rank in (("images", 3), ("labels", 1)):
        stems = (f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte")
        names.append([stem + suffix for stem in stems for suffix in ("", ".gz")])
    image_file = find_file(directory, names[0], what=what)
    label_file = find_file(directory, names[1], what=what)
    images = parse_idx(read_bytes(image_file, what=what), source=f"{what}: {image_file}")
    labels = parse_idx(read_bytes(label_file, what=what), source=f"{what}: {label_file}")
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DatasetError(
            f"{what}: {image_file} must hold uint8 (N, 28, 28) images, "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(f"{what}: {label_file} must hold uint8 (N,) labels, got {labels.shape}")
    if len(labels) != len(images):
        raise DatasetError(f"{what}: {len(images)} images but {len(labels)} labels in {directory}")
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise DatasetError(f"{what}: label {labels.max()} in {label_file} is outside 0..9")
    pixels = images.reshape(len(images), 1, IMAGE_SIDE, IMAGE_SIDE).astype(np.float32)
    pixels /= np.float32(255.0)  # in place: Fashion-MNIST's train split is 188 MB as float32
    return pixels, labels.astype(np.int64)


def load_idx_dataset(name: str, path: Path | None) -> ArrayDataset:
    """Both splits of an MNIST-layout IDX directory, pixels scaled to 0..1, shape (N, 1, 28, 28)."""
    directory = resolve_path(path, name)
    x_train, y_train = _read_split(directory, "train", what=name)
    x_test, y_test = _read_split(directory, "t10k", what=name)
    return ArrayDataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=NUM_CLASSES,
    )


def load_mnist(path: Path | None = None) -> ArrayDataset:
    """MNIST (60k/10k) from a user-supplied IDX directory; default ``<data>/mnist``."""
    return load_idx_dataset("mnist", path)


def load_fashion_mnist(path: Path | None = None) -> ArrayDataset:
    """Fashion-MNIST (60k/10k) IDX directory; default ``<data>/fashion_mnist``."""
    return load_idx_dataset("fashion_mnist", path)
