"""The Markdown table of a report: one row per run, then where each came from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .runs import Run


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
    "params identical": lambda run: (
        "n/a (running)" if run.in_progress else str(run.summary["params_identical"])
    ),
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
