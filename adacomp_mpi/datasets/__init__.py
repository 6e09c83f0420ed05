"""Dataset registry: name -> loader(path) returning an ArrayDataset (NumPy only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import ArrayDataset, DatasetError
from .cifar import load_cifar10
from .digits import load_digits
from .files import DATA_DIR_ENV, data_root
from .idx import load_fashion_mnist, load_mnist
from .japanese_vowels import load_japanese_vowels
from .mnist5k import load_mnist5k
from .npz import load_npz
from .shakespeare import load_shakespeare

Loader = Callable[[Path | None], ArrayDataset]

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "mnist5k": load_mnist5k,
    "cifar10": load_cifar10,
    "shakespeare": load_shakespeare,
    "japanese_vowels": load_japanese_vowels,
    "npz": load_npz,
}
"""Every loader but ``digits`` (embedded) reads ``path`` or, when it is None,
``$ADACOMP_DATA_DIR/<name>`` (default ``./data/<name>``); see docs/DATASETS.md."""


def load_dataset(name: str, *, path: Path | None = None) -> ArrayDataset:
    """Load a registered dataset from ``path`` (or its default location)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None
    return loader(path)


__all__ = ["DATASETS", "DATA_DIR_ENV", "ArrayDataset", "DatasetError", "data_root", "load_dataset"]
