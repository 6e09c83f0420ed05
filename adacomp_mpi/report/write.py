"""Write a report: plots and summary.md for one or more run directories."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .runs import load_runs
from .schema import TABLE_FILE, ReportError
from .table import summary_markdown


def write_report(run_dirs: Iterable[Path], *, out_dir: Path, dpi: int = 110) -> list[Path]:
    """Load the runs, write the plots and summary.md into ``out_dir``; return the files written."""
    from .plots import PLOTS
    from .timeplots import TIME_PLOTS

    runs = load_runs(run_dirs)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, plot in {**PLOTS, **TIME_PLOTS}.items():
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
