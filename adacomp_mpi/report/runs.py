"""Read run directories (finished or still running) into checked ``Run`` objects."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from .schema import (
    CONFIG_FILE,
    METRICS_FILE,
    RECORD_SCHEMAS,
    SUMMARY_FILE,
    SUMMARY_KEYS,
    TIME_PHASES,
    ReportError,
    check_phase_times,
    ratio,
    validate_metrics_record,
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
    evals: tuple[Mapping[str, Any], ...] = ()  # --eval-every records, in step order

    @property
    def in_progress(self) -> bool:
        """No summary.json yet: the run is still training (or died before the end)."""
        return bool(self.summary.get("in_progress"))

    def evaluations(self) -> list[Mapping[str, Any]]:
        """Every evaluation (epoch and eval records) in step order, one per step."""
        by_step = {record["step"]: record for record in (*self.evals, *self.epochs)}
        return [by_step[step] for step in sorted(by_step)]

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
    if "time_breakdown" in summary and (problem := check_phase_times(summary["time_breakdown"])):
        raise ReportError(f"{path}: key 'time_breakdown' should be {problem}")
    return summary


def _parsed_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, record or why it is not one) for each non-blank line of a
    metrics.jsonl; ReportError if the file cannot be read at all."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: not readable ({error})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            yield number, f"not valid JSON ({error})"


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete records of a metrics.jsonl, even one still being written
    or cut short by a crash (a partial line is skipped); [] if unreadable."""
    try:
        return [record for _, record in _parsed_lines(path) if isinstance(record, dict)]
    except ReportError:
        return []


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(step records, epoch records) from a metrics.jsonl, each checked against the schema."""
    records = read_metrics_by_type(path)
    return records["step"], records["epoch"]


def read_metrics_by_type(path: Path, *, partial: bool = False) -> dict[str, list[dict[str, Any]]]:
    """{record type: records} from a metrics.jsonl, each checked against the schema;
    ``partial`` (a run still writing) skips a cut-short last line instead of refusing it."""
    if not path.is_file():
        raise ReportError(f"{path}: missing (was the run made by a trainer that writes metrics?)")
    records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in RECORD_SCHEMAS}
    parsed = list(_parsed_lines(path))
    if partial and parsed and isinstance(parsed[-1][1], str):
        parsed.pop()
    for number, record in parsed:
        if isinstance(record, str):
            raise ReportError(f"{path} line {number}: {record}")
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
    return records


def progress_summary(
    config: Mapping[str, Any], records: Mapping[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """What summary.json would say so far, for a run without one (still training):
    read from config.json and the records written up to now."""
    options = config.get("options") or {}
    steps = records["step"]
    evaluations = sorted((*records["eval"], *records["epoch"]), key=lambda r: r["step"])
    last = evaluations[-1] if evaluations else {}
    sent = sum(record["bytes_sent"] for record in steps)
    return {
        "in_progress": True,
        "world_size": config.get("world_size", "?"),
        "compression": options.get("compression", "?"),
        "model": options.get("model", "?"),
        "dataset": options.get("dataset", "?"),
        "steps": steps[-1]["step"],
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "compression_ratio": ratio(sum(record["dense_bytes"] for record in steps), sent),
        "bits_per_sent_element": steps[-1]["bits_per_sent_element"],
        "bytes_sent": sent,
        "wall_seconds": steps[-1]["wall_seconds"],
        "params_identical": None,
    }


def load_run(path: Path) -> Run:
    """Read and check one run directory (labels are set by ``load_runs``)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: not a directory")
    config_path = path / CONFIG_FILE
    if not (path / SUMMARY_FILE).exists():
        if not config_path.exists():
            raise ReportError(
                f"{path / SUMMARY_FILE}: missing, and no {CONFIG_FILE} to read a run in "
                "progress from (is this a run directory written by adacomp-train?)"
            )
        config = _read_json(config_path)
        records = read_metrics_by_type(path / METRICS_FILE, partial=True)
        summary = progress_summary(config, records)
    else:
        summary = _read_summary(path / SUMMARY_FILE)
        records = read_metrics_by_type(path / METRICS_FILE)
        last_step = records["step"][-1]["step"]
        if last_step != summary["steps"]:
            raise ReportError(
                f"{path}: {METRICS_FILE} ends at step {last_step} but {SUMMARY_FILE} "
                f"says {summary['steps']} steps (files from different runs?)"
            )
        config = (
            _read_json(config_path) if config_path.exists() else dict(summary.get("config", {}))
        )
    steps, epochs, evals = (tuple(records[kind]) for kind in ("step", "epoch", "eval"))
    return Run(path, summary, config, steps, epochs, evals=evals)


def base_label(run: Run) -> str:
    """'<compression> <model> n=<world size>': what usually tells runs apart."""
    s = run.summary
    running = " (running)" if run.in_progress else ""
    return f"{s['compression']} {s['model']} n={s['world_size']}{running}"


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
