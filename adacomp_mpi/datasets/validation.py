"""``--val-fraction``: a validation split carved from the training data.

The test split stays untouched for the final score; the validation split is
what one tunes against (as with Lightning's or Keras's validation split). The
carve is a fixed-seed permutation, independent of ``--seed``, so runs with
different training seeds are scored on the same validation samples, and every
rank computes the same split without talking to the others.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .base import ArrayDataset, DatasetError

VAL_SPLIT_SEED = 20180101  # fixed: the split must not move with --seed


def carve_validation(dataset: ArrayDataset, fraction: float) -> ArrayDataset:
    """``dataset`` with round(fraction * N) training samples moved to x_val/y_val."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"--val-fraction must be between 0 and 1 (exclusive), not {fraction}")
    samples = len(dataset.x_train)
    held_out = round(fraction * samples)
    if held_out < 1 or held_out >= samples:
        raise DatasetError(
            f"--val-fraction {fraction} of {samples} training samples leaves "
            f"{held_out} for validation and {samples - held_out} for training; "
            "both need at least one"
        )
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(samples)
    val, train = np.sort(order[:held_out]), np.sort(order[held_out:])
    return dataclasses.replace(
        dataset,
        x_train=dataset.x_train[train],
        y_train=dataset.y_train[train],
        x_val=dataset.x_train[val],
        y_val=dataset.y_train[val],
    )
