"""Cross-rank agreement: a step that may fail on one rank fails on all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from adacomp_mpi.common.errors import UsageError

from .communicator import Communicator

T = TypeVar("T")


def agree(comm: Communicator, action: Callable[[], T]) -> T:
    """Run ``action`` on every rank; if it fails on any, raise UsageError on all.

    Nothing collective happens inside ``action``, so a rank that fails cannot
    leave the others waiting: they all meet in the allgather below.
    """
    try:
        result, error = action(), None
    except (UsageError, ValueError, OSError) as failure:
        result, error = None, str(failure).splitlines()[0] if str(failure) else repr(failure)
    errors = comm.allgather_object(error)
    failed = [(rank, message) for rank, message in enumerate(errors) if message]
    if failed:
        messages = {message for _, message in failed}
        if len(messages) == 1 and len(failed) == comm.size:
            raise UsageError(messages.pop())
        raise UsageError("; ".join(f"rank {rank}: {message}" for rank, message in failed))
    return result


def sum_across(comm: Communicator, values: list[float]) -> np.ndarray:
    """Collective: elementwise float64 sums of a few numbers over every rank."""
    array = np.asarray(values, np.float64)
    comm.allreduce_sum(array)
    return array
