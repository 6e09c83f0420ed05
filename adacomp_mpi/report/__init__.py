"""Offline reporting: the metrics schema (one module), reading run directories,
tables and plots. Imports neither torch nor mpi4py; matplotlib only when plots
are drawn.
"""

from .runs import Run, load_run, load_runs, read_metrics, read_records
from .schema import ReportError, validate_metrics_record
from .write import write_report

__all__ = [
    "ReportError",
    "Run",
    "load_run",
    "load_runs",
    "read_metrics",
    "read_records",
    "validate_metrics_record",
    "write_report",
]
