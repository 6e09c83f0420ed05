"""The trained model as a file of its own, and weights to start a run from.

``model.pt`` holds the weights (a plain state dict) and what built them, so
``torch.load(path, weights_only=True)`` reads it anywhere without this
package. ``--init-from`` takes such a file or a checkpoint directory and
starts a new run from its weights with new hyper-parameters.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adacomp_mpi.common.errors import UsageError
from adacomp_mpi.common.files import atomic_write_bytes

from . import checkpoint
from .config import TrainConfig

MODEL_FILE = "model.pt"
FORMAT = "adacomp-mpi model"
VERSION = 1


def save_model(
    path: Path,
    model: nn.Module,
    config: TrainConfig,
    *,
    standardization: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Write the weights and what built them (rank 0), atomically.

    With ``standardization`` (--standardize), ``feature_mean`` and
    ``feature_std`` tensors: a model input is ``(x - feature_mean) / feature_std``."""
    content: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": config.model,
        "model_options": dict(config.model_options),
        "dataset": config.dataset,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if standardization is not None:
        mean, std = standardization
        content["feature_mean"] = torch.from_numpy(np.array(mean, np.float32))
        content["feature_std"] = torch.from_numpy(np.array(std, np.float32))
    buffer = io.BytesIO()
    torch.save(content, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _weights_of_model_file(path: Path) -> dict[str, Any]:
    try:
        content = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # any unpickling failure: not a model file we can trust
        raise UsageError(f"--init-from {path}: not a readable model file ({error})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise UsageError(f"--init-from {path}: not a {MODEL_FILE} written by adacomp-train")
    return content["state_dict"]


def load_weights(source: str) -> dict[str, Any]:
    """The model weights in a model.pt, a checkpoint directory, or a run directory
    (its model.pt); UsageError with one line otherwise."""
    path = Path(source)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    if path.is_file():
        return _weights_of_model_file(path)
    if not os.path.isdir(path):
        raise UsageError(f"--init-from {source}: no such file or directory")
    return checkpoint.read_common(path)["model"]  # one-line CheckpointError if not one


def init_from(model: nn.Module, source: str) -> None:
    """Load ``source``'s weights into ``model``; UsageError if they do not fit."""
    try:
        model.load_state_dict(load_weights(source))
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise UsageError(
            f"--init-from {source}: the weights do not fit this model ({first})"
        ) from None
