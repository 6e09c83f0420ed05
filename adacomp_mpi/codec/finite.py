"""One cheap finiteness test, shared by the encoder and the decoder."""

from __future__ import annotations

import numpy as np


def all_finite(values: np.ndarray) -> bool:
    """True iff no element is NaN or infinite.

    A NaN or an infinity makes the sum of squares NaN or infinite, so a finite
    ``dot(x, x)`` (one fast BLAS read, no temporary) proves every element
    finite; only a non-finite one, which a finite overflow can also cause,
    needs the exact element-wise test.
    """
    if values.size == 0:
        return True
    flat = values.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.dot(flat, flat)
    if np.isfinite(squares):
        return True
    return bool(np.isfinite(flat).all())
