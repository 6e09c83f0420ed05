"""``adacomp-train report``: plots and a summary table from finished run directories.

Kept light (click only): cli/main.py imports this module on every rank of every
training job, so matplotlib is imported only when a report is actually made.
"""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_OUT = Path("report")


@click.command(context_settings={"show_default": True})
@click.argument(
    "run_dirs",
    metavar="RUN_DIR...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, readable=True, path_type=Path),
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    help="Directory to write the plots and summary.md into (created if needed; "
    "existing files of the same names are replaced).",
)
def report(run_dirs: tuple[Path, ...], out_dir: Path) -> None:
    """Compare runs, finished or still running: PNG plots and a Markdown table.

    Each RUN_DIR is a training run's --output-dir (summary.json, metrics.jsonl,
    config.json; see docs/METRICS.md); a run without summary.json yet is read
    from config.json and the records so far, labelled "(running)". All runs
    are overlaid in each plot, one colour per run. Runs are labelled
    "<compression> <model> n=<ranks>", with the directory name added when two
    runs share a label. Writes into --out
    (default ./report, relative to where you run it; run directories are never
    modified):

    \b
      loss.png         training loss vs step and vs cumulative bytes sent
      accuracy.png     test accuracy (each epoch) vs step and vs bytes sent
      compression.png  compression ratio per step, overall and per layer kind
      time.png         step time by phase (forward/backward, encode, ...)
      tta.png          training loss and test accuracy vs wall-clock seconds
      summary.md       one table row per run (accuracy, ratio, bytes, ...)

    \b
    Example:
      mpiexec -n 4 adacomp-train --compression none --output-dir runs/dense
      mpiexec -n 4 adacomp-train --output-dir runs/adacomp
      adacomp-train report runs/dense runs/adacomp --out runs/compare
    """
    from adacomp_mpi.report.schema import ReportError
    from adacomp_mpi.report.write import write_report

    try:
        written = write_report(run_dirs, out_dir=out_dir)
    except ReportError as error:
        raise click.ClickException(str(error)) from None
    for path in written:
        click.echo(str(path))
