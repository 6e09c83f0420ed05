"""Rank-aware logging: rank 0 speaks, other ranks only on request or on error."""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "adacomp_mpi"


def setup_logging(
    *, rank: int, size: int, quiet: bool = False, all_ranks: bool = False
) -> logging.Logger:
    """Configure the package logger; lines carry ``[rank/size]``."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"[{rank}/{size}] %(message)s"))
    logger.addHandler(handler)
    speaks = rank == 0 or all_ranks
    logger.setLevel(logging.INFO if speaks and not quiet else logging.WARNING)
    logger.propagate = False
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)
