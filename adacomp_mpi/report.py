"""Read finished run directories and turn them into plots and a Markdown table.

A run directory is what ``adacomp-train --output-dir`` leaves behind (rank 0):
``summary.json``, ``metrics.jsonl`` (one JSON record per step and per epoch,
schema in docs/METRICS.md) and, optionally, ``config.json``. This module owns
the schema check (``validate_metrics_record``) so the trainer's tests and the
report agree on one definition. It imports neither torch nor MPI, and imports
matplotlib only when plots are written (``adacomp_mpi.plots``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
TABLE_FILE = "summary.md"

TIME_PHASES = ("forward_backward", "encode", "communicate", "decode", "optimizer")
LAYER_KINDS = ("conv", "fc", "recurrent", "embedding", "other")


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


def _phase_times(value: Any) -> str | None:
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
        "time": _phase_times,
        "wall_seconds": _number,
    },
    optional={},
)

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
    optional={"test_perplexity": _number},
)

RECORD_SCHEMAS: dict[str, RecordSchema] = {"step": STEP_SCHEMA, "epoch": EPOCH_SCHEMA}


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


# --- loading runs -------------------------------------------------------------------------
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


@dataclass(frozen=True)
class Run:
    """One run directory, checked and parsed."""

    path: Path
    summary: Mapping[str, Any]
    config: Mapping[str, Any]
    steps: tuple[Mapping[str, Any], ...]
    epochs: tuple[Mapping[str, Any], ...]
    label: str = ""

    def column(self, key: str) -> list[Any]:
        """One field of every step record, in step order."""
        return [record[key] for record in self.steps]

    def time_breakdown(self) -> dict[str, float]:
        """Seconds per phase over the run: summary.json's if present, else summed step times."""
        if "time_breakdown" in self.summary:
            return {phase: float(self.summary["time_breakdown"][phase]) for phase in TIME_PHASES}
        return {
            phase: math.fsum(record["time"][phase] for record in self.steps)
            for phase in TIME_PHASES
        }


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ReportError(f"{path}: missing (is this a run directory written by adacomp-train?)")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _read_summary(path: Path) -> dict[str, Any]:
    summary = _read_json(path)
    for key in SUMMARY_KEYS:
        if key not in summary:
            raise ReportError(f"{path}: missing key {key!r}")
    if "time_breakdown" in summary and (problem := _phase_times(summary["time_breakdown"])):
        raise ReportError(f"{path}: key 'time_breakdown' should be {problem}")
    return summary


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(step records, epoch records) from a metrics.jsonl, each checked against the schema."""
    if not path.is_file():
        raise ReportError(f"{path}: missing (was the run made by a trainer that writes metrics?)")
    records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in RECORD_SCHEMAS}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: not readable ({error})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReportError(f"{path} line {number}: not valid JSON ({error})") from None
        try:
            validate_metrics_record(record, allow_extra=True)
        except ReportError as error:
            raise ReportError(f"{path} line {number}: {error}") from None
        records[record["type"]].append(record)
    steps = [record["step"] for record in records["step"]]
    if not steps:
        raise ReportError(f"{path}: no step records")
    if any(later <= earlier for earlier, later in pairwise(steps)):
        raise ReportError(f"{path}: step numbers are not strictly increasing")
    return records["step"], records["epoch"]


def load_run(path: Path) -> Run:
    """Read and check one run directory (labels are set by ``load_runs``)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: not a directory")
    summary = _read_summary(path / SUMMARY_FILE)
    steps, epochs = read_metrics(path / METRICS_FILE)
    if steps[-1]["step"] != summary["steps"]:
        raise ReportError(
            f"{path}: {METRICS_FILE} ends at step {steps[-1]['step']} but {SUMMARY_FILE} "
            f"says {summary['steps']} steps (files from different runs?)"
        )
    config_path = path / CONFIG_FILE
    config = _read_json(config_path) if config_path.exists() else dict(summary.get("config", {}))
    return Run(path, summary, config, tuple(steps), tuple(epochs))


def base_label(run: Run) -> str:
    """'<compression> <model> n=<world size>': what usually tells runs apart."""
    s = run.summary
    return f"{s['compression']} {s['model']} n={s['world_size']}"


def _distinct_suffixes(paths: Sequence[Path]) -> list[str]:
    """The shortest trailing path parts that tell these directories apart (a/run, b/run)."""
    parts = [path.resolve().parts for path in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        suffixes = ["/".join(p[-depth:]) for p in parts]
        if len(set(suffixes)) == len(suffixes):
            return suffixes
    return [str(path) for path in paths]  # the same directory given twice


def label_runs(runs: Sequence[Run]) -> list[Run]:
    """Give every run a distinct label: the base label, plus the directory when shared."""
    bases = [base_label(run) for run in runs]
    groups: dict[str, list[int]] = {}
    for index, base in enumerate(bases):
        groups.setdefault(base, []).append(index)
    labels = list(bases)
    for base, members in groups.items():
        if len(members) > 1:
            suffixes = _distinct_suffixes([runs[i].path for i in members])
            for index, suffix in zip(members, suffixes, strict=True):
                labels[index] = f"{base} ({suffix})"
    seen: Counter[str] = Counter()
    for index, label in enumerate(labels):
        seen[label] += 1
        if seen[label] > 1:
            labels[index] = f"{label} #{seen[label]}"
    return [replace(run, label=label) for run, label in zip(runs, labels, strict=True)]


def load_runs(paths: Iterable[Path]) -> list[Run]:
    """Load and label several run directories (in the given order)."""
    runs = [load_run(Path(path)) for path in paths]
    if not runs:
        raise ReportError("no run directories given")
    return label_runs(runs)


# --- the Markdown table -------------------------------------------------------------------
def format_bytes(count: float) -> str:
    """SI units, three significant digits: 4894940 -> '4.89 MB'."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 999.5 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _fixed(digits: int, suffix: str = "") -> Callable[[Any], str]:
    def render(value: Any) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}{suffix}"

    return render


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


TABLE_COLUMNS: dict[str, Callable[[Run], str]] = {
    "run": lambda run: run.label,
    "world size": lambda run: str(run.summary["world_size"]),
    "compression": lambda run: str(run.summary["compression"]),
    "model": lambda run: str(run.summary["model"]),
    "dataset": lambda run: str(run.summary["dataset"]),
    "steps": lambda run: str(run.summary["steps"]),
    "test accuracy": lambda run: _fixed(4)(run.summary["test_accuracy"]),
    "test loss": lambda run: _fixed(4)(run.summary["test_loss"]),
    "compression ratio": lambda run: _fixed(1, "x")(run.summary["compression_ratio"]),
    "bits/sent element": lambda run: _fixed(2)(run.summary["bits_per_sent_element"]),
    "bytes sent": lambda run: format_bytes(float(run.summary["bytes_sent"])),
    "wall seconds": lambda run: _fixed(1)(run.summary["wall_seconds"]),
    "params identical": lambda run: str(run.summary["params_identical"]),
}


def summary_markdown(runs: Sequence[Run]) -> str:
    """A table with one row per run, then where each run came from."""
    header = list(TABLE_COLUMNS)
    lines = [
        "# Run report",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += [
        "| " + " | ".join(_cell(f(run)) for f in TABLE_COLUMNS.values()) + " |" for run in runs
    ]
    lines += ["", "Sources:", ""]
    for run in runs:
        versions = run.config.get("versions") or {}
        extra = [f"git {run.config['git_commit'][:12]}"] if run.config.get("git_commit") else []
        extra += [
            f"{name} {versions[name]}" for name in ("adacomp_mpi", "torch") if name in versions
        ]
        suffix = f" ({', '.join(extra)})" if extra else ""
        lines.append(f"- {_cell(run.label)}: `{run.path}`{suffix}")
    return "\n".join(lines) + "\n"


# --- everything ---------------------------------------------------------------------------
def write_report(run_dirs: Iterable[Path], *, out_dir: Path, dpi: int = 110) -> list[Path]:
    """Load the runs, write the plots and summary.md into ``out_dir``; return the files written."""
    from .plots import PLOTS

    runs = load_runs(run_dirs)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, plot in PLOTS.items():
            target = out_dir / name
            plot(runs).savefig(target, dpi=dpi)
            written.append(target)
        table = out_dir / TABLE_FILE
        table.write_text(summary_markdown(runs), encoding="utf-8")
    except OSError as error:
        raise ReportError(
            f"cannot write the report to {out_dir}: {error.strerror or error}"
        ) from None
    return [*written, table]
