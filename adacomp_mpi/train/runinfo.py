"""What a run needs to be reproduced: resolved options, library versions, commit."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import TrainConfig


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    from adacomp_mpi.dist.communicator import mpi_library_version

    return {
        "adacomp_mpi": _version("adacomp-mpi"),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "mpi4py": _version("mpi4py"),
        "mpi_library": mpi_library_version(),
    }


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, if it is a checkout."""
    source = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def run_config(
    config: TrainConfig, *, world_size: int, model_sha256: str | None = None
) -> dict[str, Any]:
    """The content of RUN_DIR/config.json; its "options" feed ``--config``."""
    return {
        "options": config.to_dict(),
        "world_size": world_size,
        "model_sha256": model_sha256,
        "versions": library_versions(),
        "git_commit": git_commit(),
    }
