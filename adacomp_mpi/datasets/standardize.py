"""``--standardize``: per-feature mean and standard deviation of the training
split, applied alike to train, validation and test (a feature that never varies keeps
std 1). Every rank loads the same arrays and computes the same statistics, so
every replica sees the same inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import ArrayDataset, DatasetError

STANDARDIZABLE = ("npz",)  # datasets whose features arrive in their own raw ranges


@dataclass(frozen=True)
class StandardizedDataset(ArrayDataset):
    """An ArrayDataset whose x were standardized with these statistics."""

    feature_mean: np.ndarray | None = None  # shape of one sample, float32
    feature_std: np.ndarray | None = None


def feature_stats(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, std) over the training samples; std 0 -> 1."""
    data = x_train.astype(np.float64)
    mean, std = data.mean(axis=0), data.std(axis=0)
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def standardize(dataset: ArrayDataset) -> StandardizedDataset:
    """``dataset`` with x -> (x - mean) / std, the statistics from x_train only."""
    if dataset.name not in STANDARDIZABLE or dataset.task != "classify":
        raise DatasetError(
            f"--standardize applies to --dataset {' or '.join(STANDARDIZABLE)}, "
            f"not {dataset.name} (its loader already scales the features)"
        )
    mean, std = feature_stats(dataset.x_train)
    fields = {name: getattr(dataset, name) for name in ArrayDataset.__dataclass_fields__}
    fields["x_train"] = ((dataset.x_train - mean) / std).astype(np.float32)
    fields["x_test"] = ((dataset.x_test - mean) / std).astype(np.float32)
    if dataset.x_val is not None:
        fields["x_val"] = ((dataset.x_val - mean) / std).astype(np.float32)
    return StandardizedDataset(**fields, feature_mean=mean, feature_std=std)


def standardization(dataset: ArrayDataset) -> tuple[np.ndarray, np.ndarray] | None:
    """The (mean, std) a dataset was standardized with, or None."""
    if isinstance(dataset, StandardizedDataset) and dataset.feature_mean is not None:
        return dataset.feature_mean, dataset.feature_std
    return None
