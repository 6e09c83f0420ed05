"""The one source of a run directory's names and of the metrics.jsonl schema.

A run directory is what ``adacomp-train --output-dir`` leaves behind (rank 0):
``summary.json``, ``metrics.jsonl`` (one JSON record per step and per epoch,
documented in docs/METRICS.md) and ``config.json``. The trainer writes with
these names and the report reads with them; ``validate_metrics_record`` is the
check both the trainer's tests and the report use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adacomp_mpi.codec.specs import LAYER_KINDS

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
TABLE_FILE = "summary.md"

# The phases of one training step, in the order they happen.
TIME_PHASES = ("forward_backward", "encode", "communicate", "decode", "optimizer")
FLOAT32_BYTES = 4


class ReportError(ValueError):
    """A run directory is missing a file or holds one that breaks the schema (one line)."""


# --- the metrics.jsonl schema -------------------------------------------------------------
# A check returns None when the value is fine, else what was expected (for the message).
FieldCheck = Callable[[Any], "str | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any) -> str | None:
    return None if _is_number(value) else "a number"


def _optional_number(value: Any) -> str | None:
    return None if value is None or _is_number(value) else "a number or null"


def _count(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else "an integer >= 0"


def _step_number(value: Any) -> str | None:
    return None if _is_int(value) and value >= 1 else "an integer >= 1"


def _fraction(value: Any) -> str | None:
    ok = _is_number(value) and (math.isnan(value) or 0 <= value <= 1)
    return None if ok else "a number in [0, 1]"


def check_phase_times(value: Any) -> str | None:
    """{phase: seconds} with exactly the five phases."""
    if not isinstance(value, dict) or set(value) != set(TIME_PHASES):
        return f"an object with exactly the keys {list(TIME_PHASES)}"
    return None if all(_is_number(v) and v >= 0 for v in value.values()) else "seconds >= 0"


def _kind_ratios(value: Any) -> str | None:
    """{layer kind: ratio} for the kinds the model has (a subset of LAYER_KINDS)."""
    if not isinstance(value, dict) or not set(value) <= set(LAYER_KINDS):
        return f"an object whose keys are among {list(LAYER_KINDS)}"
    return None if all(_is_number(v) for v in value.values()) else "numbers as values"


@dataclass(frozen=True)
class RecordSchema:
    """Keys every record of one type must have, and keys it may have."""

    required: Mapping[str, FieldCheck]
    optional: Mapping[str, FieldCheck]


STEP_SCHEMA = RecordSchema(
    required={
        "type": lambda v: None if v == "step" else '"step"',
        "step": _step_number,
        "epoch": _count,
        "lr": _number,
        "loss": _number,
        "samples": _count,
        "samples_per_s": _number,
        "bytes_sent": _count,
        "bytes_sent_max_rank": _count,
        "bytes_received_per_rank": _count,
        "dense_bytes": _count,
        "compression_ratio": _number,
        "cumulative_compression_ratio": _number,
        "compression_ratio_by_kind": _kind_ratios,
        "density": _fraction,
        "bits_per_sent_element": _optional_number,
        "time": check_phase_times,
        "wall_seconds": _number,
    },
    optional={},
)

# Language models add perplexity; with --val-fraction every evaluation also scores
# the validation split.
EVALUATION_OPTIONAL: Mapping[str, FieldCheck] = {
    "test_perplexity": _number,
    "val_loss": _number,
    "val_accuracy": _fraction,
    "val_perplexity": _number,
    # seconds of training before this evaluation, earlier evaluations left out
    # (the time-to-accuracy clock); absent in runs made before it was recorded
    "train_seconds": _number,
}

EPOCH_SCHEMA = RecordSchema(
    required={
        "type": lambda v: None if v == "epoch" else '"epoch"',
        "epoch": _count,
        "step": _count,
        "train_loss": _number,
        "test_loss": _number,
        "test_accuracy": _fraction,
        "wall_seconds": _number,
    },
    optional=EVALUATION_OPTIONAL,
)

EVAL_SCHEMA = RecordSchema(
    required={
        "type": lambda v: None if v == "eval" else '"eval"',
        "epoch": _count,
        "step": _step_number,
        "test_loss": _number,
        "test_accuracy": _fraction,
        "wall_seconds": _number,
    },
    optional=EVALUATION_OPTIONAL,
)

RECORD_SCHEMAS: dict[str, RecordSchema] = {
    "step": STEP_SCHEMA,
    "epoch": EPOCH_SCHEMA,
    "eval": EVAL_SCHEMA,
}


def validate_metrics_record(record: Any, *, allow_extra: bool = False) -> None:
    """Raise ReportError naming the offending key if ``record`` breaks the documented schema.

    Strict by default (unknown keys are errors) so the trainer's tests catch a
    writer that drifts from docs/METRICS.md; the report loads with
    ``allow_extra=True`` so a newer trainer's extra fields do not stop it.
    """
    if not isinstance(record, dict):
        raise ReportError(f"a record must be a JSON object, not {type(record).__name__}")
    kind = record.get("type")
    if kind not in RECORD_SCHEMAS:
        raise ReportError(f"key 'type' is {kind!r}; expected one of {sorted(RECORD_SCHEMAS)}")
    schema = RECORD_SCHEMAS[kind]
    for key in schema.required:
        if key not in record:
            raise ReportError(f"{kind} record: missing key {key!r}")
    checks = {**schema.required, **schema.optional}
    for key, value in record.items():
        if key not in checks:
            if allow_extra:
                continue
            raise ReportError(f"{kind} record: unknown key {key!r}")
        if (expected := checks[key](value)) is not None:
            raise ReportError(f"{kind} record: key {key!r} is {value!r}; expected {expected}")


SUMMARY_KEYS = (
    "world_size",
    "compression",
    "model",
    "dataset",
    "steps",
    "test_accuracy",
    "test_loss",
    "compression_ratio",
    "bits_per_sent_element",
    "bytes_sent",
    "wall_seconds",
    "params_identical",
)


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy), clipped so a diverged loss gives inf-free output."""
    return math.exp(min(loss, 700.0))


def ratio(dense: float, sent: float) -> float | None:
    """Compression ratio: dense float32 bytes / bytes actually sent (None if nothing sent)."""
    return dense / sent if sent else None
