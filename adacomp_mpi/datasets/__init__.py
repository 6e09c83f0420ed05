"""Dataset registry: name -> loader(path) returning an ArrayDataset (NumPy only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import ArrayDataset, DatasetError
from .digits import load_digits

Loader = Callable[[Path | None], ArrayDataset]

DATASETS: dict[str, Loader] = {
    "digits": load_digits,
}


def load_dataset(name: str, *, path: Path | None = None) -> ArrayDataset:
    """Load a registered dataset from ``path`` (or its default location)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}") from None
    return loader(path)


__all__ = ["DATASETS", "ArrayDataset", "DatasetError", "load_dataset"]
