"""Japanese Vowels speaker identification (UCI; the sktime ``.ts`` copy).

``path`` is a directory holding ``JapaneseVowels_TRAIN.ts`` and
``JapaneseVowels_TEST.ts`` (the split the dataset ships with: 270 / 370 cases).
Each case is 7..29 frames of 12 LPC cepstrum coefficients from one of 9
speakers. Sequences are left-padded with zeros to ``MAX_LEN`` frames so the
real frames end at the last time step, where an LSTM classifier reads its
final hidden state. x is float32 (N, 29, 12); labels "1".."9" become 0..8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ArrayDataset, DatasetError
from .files import brief, resolve_path
from .ts_format import TsCases, read_ts

MAX_LEN = 29
CHANNELS = 12
TRAIN_FILE = "JapaneseVowels_TRAIN.ts"
TEST_FILE = "JapaneseVowels_TEST.ts"


def left_pad(cases: TsCases, *, length: int, channels: int, source: str) -> np.ndarray:
    """Stack variable-length (T_i, C) cases into (N, length, C), zeros before each series."""
    out = np.zeros((len(cases.series), length, channels), dtype=np.float32)
    for i, series in enumerate(cases.series):
        if series.shape[1] != channels:
            raise DatasetError(f"{source}: case {i} has {series.shape[1]} channels, not {channels}")
        if len(series) > length:
            raise DatasetError(f"{source}: case {i} has {len(series)} frames, more than {length}")
        out[i, length - len(series) :] = series
    return out


def encode_labels(labels: tuple[str, ...], classes: tuple[str, ...], *, source: str) -> np.ndarray:
    """Map label strings to their index in ``classes``; DatasetError on an unknown label."""
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        listed = brief(f"labels {unknown[:5]} not among classes {list(classes)}")
        raise DatasetError(f"{source}: {listed}")
    return np.array([index[label] for label in labels], dtype=np.int64)


def _pad(cases: TsCases, path: Path) -> np.ndarray:
    return left_pad(cases, length=MAX_LEN, channels=CHANNELS, source=f"japanese_vowels: {path}")


def load_japanese_vowels(path: Path | None = None) -> ArrayDataset:
    """Both shipped splits; default ``<data>/japanese_vowels``."""
    directory = resolve_path(path, "japanese_vowels")
    if not directory.is_dir():
        raise DatasetError(f"japanese_vowels: directory {directory} not found")
    train_path, test_path = directory / TRAIN_FILE, directory / TEST_FILE
    train = read_ts(train_path, what="japanese_vowels")
    test = read_ts(test_path, what="japanese_vowels")
    # Declared header order when present ("1".."9" -> 0..8), else sorted training labels.
    classes = train.class_labels or tuple(sorted(set(train.labels)))
    if test.class_labels and test.class_labels != classes:
        raise DatasetError("japanese_vowels: TRAIN and TEST files declare different class labels")
    return ArrayDataset(
        name="japanese_vowels",
        x_train=_pad(train, train_path),
        y_train=encode_labels(train.labels, classes, source=f"japanese_vowels: {train_path}"),
        x_test=_pad(test, test_path),
        y_test=encode_labels(test.labels, classes, source=f"japanese_vowels: {test_path}"),
        num_classes=len(classes),
    )
