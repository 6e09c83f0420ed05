"""The dataset contract every loader returns: plain NumPy arrays, no torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or malformed (one-line message)."""


@dataclass(frozen=True)
class ArrayDataset:
    """A train/test split held in memory.

    ``task`` tells the trainer how to score predictions:
    ``"classify"``: x is (N, ...) float32 features, y is (N,) int64 labels;
    ``"language_model"``: x and y are (N, T) int64 token ids, y shifted by one.
    ``x_val``/``y_val`` exist only when a validation split was carved off.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    task: str = "classify"
    x_val: np.ndarray | None = None  # --val-fraction: carved from the training split
    y_val: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (64,), (1, 28, 28) or (T,)."""
        return tuple(self.x_train.shape[1:])
