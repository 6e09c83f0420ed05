"""A strict reader for sktime / UEA ``.ts`` files (multivariate, possibly unequal length).

Header lines start with ``@`` (``@dimensions 12``, ``@classLabel true 1 2 ...``,
``@data``); ``#`` lines are comments. After ``@data`` each line is one case:
channels separated by ``:``, values within a channel by ``,``, the class label
last. Timestamps and missing values (``?``) are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetError
from .files import brief, read_bytes, require_text


@dataclass(frozen=True)
class TsCases:
    """Parsed cases: one (T_i, C) float32 array per case, its label, and the declared labels."""

    series: tuple[np.ndarray, ...]
    labels: tuple[str, ...]
    class_labels: tuple[str, ...]


def _parse_case(line: str, dimensions: int | None, where: str) -> tuple[np.ndarray, str]:
    *channels, label = line.split(":")
    if not channels:
        raise DatasetError(f"{where}: expected channels separated by ':' then a label")
    if dimensions is not None and len(channels) != dimensions:
        raise DatasetError(f"{where}: {len(channels)} channels, header says {dimensions}")
    try:
        values = [np.array(channel.split(","), dtype=np.float32) for channel in channels]
    except ValueError as error:
        raise DatasetError(f"{where}: bad value ({brief(error)})") from None
    lengths = {len(v) for v in values}
    if len(lengths) != 1:
        raise DatasetError(f"{where}: channels have different lengths {sorted(lengths)}")
    stacked = np.stack(values, axis=1)
    if not np.all(np.isfinite(stacked)):
        raise DatasetError(f"{where}: missing or non-finite values are not supported")
    return stacked, label.strip()


def parse_ts(text: str, *, source: str) -> TsCases:
    """Parse ``.ts`` text; DatasetError (with the line number) on anything malformed."""
    dimensions: int | None = None
    class_labels: tuple[str, ...] = ()
    in_data = False
    series: list[np.ndarray] = []
    labels: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        if line.startswith("@"):
            key, *words = line.split()
            key = key.lower()
            if key == "@data":
                in_data = True
            elif key == "@dimensions" and words and words[0].isdigit():
                dimensions = int(words[0])
            elif key == "@timestamps" and words and words[0].lower() == "true":
                raise DatasetError(f"{where}: timestamped .ts files are not supported")
            elif key == "@classlabel" and words and words[0].lower() == "true":
                class_labels = tuple(words[1:])
            continue
        if not in_data:
            raise DatasetError(f"{where}: data line before @data")
        case, label = _parse_case(line, dimensions, where)
        series.append(case)
        labels.append(label)
    if not series:
        raise DatasetError(f"{source}: no cases after @data")
    return TsCases(series=tuple(series), labels=tuple(labels), class_labels=class_labels)


def read_ts(path: Path, *, what: str) -> TsCases:
    """Read and parse one ``.ts`` file."""
    if not path.is_file():
        raise DatasetError(f"{what}: {path} not found")
    data = read_bytes(path, what=what)
    require_text(data, source=f"{what}: {path}", expected="a .ts text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{what}: {path} is not UTF-8 text") from None
    return parse_ts(text, source=f"{what}: {path}")
