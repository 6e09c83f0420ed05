"""Figures against wall-clock seconds: what a user waits for, next to the
against-step and against-bytes views of plots.py.

``plot_time_to_accuracy`` is the report's ``tta.png``; ``plot_quality_panels``
draws the time-to-accuracy benchmark's figure (docs/TTA.md): one panel per
link bandwidth, one line per system, from plain series rather than run
directories, since the torch peers write no step records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from .plots import (
    PANEL_SIZE,
    PlainLogFormatter,
    _figure,
    _run_legend,
    plot_smoothed,
    run_color,
)
from .runs import Run

Series = tuple[Sequence[float], Sequence[float]]


def eval_seconds(record: Mapping[str, Any]) -> float:
    """An evaluation's place on the time axis: training seconds with evaluations
    left out when the record has them, else wall seconds since training started."""
    return float(record.get("train_seconds", record["wall_seconds"]))


def plot_time_to_accuracy(runs: Sequence[Run]) -> Figure:
    """Training loss and test accuracy against seconds: which run gets there sooner."""
    figure, (loss_ax, accuracy_ax) = _figure(2)
    evaluated = False
    for index, run in enumerate(runs):
        seconds = np.asarray(run.column("wall_seconds"), dtype=np.float64)
        loss = np.asarray(run.column("loss"), dtype=np.float64)
        plot_smoothed(loss_ax, seconds, loss, color=run_color(index))
        evaluations = run.evaluations()
        if evaluations:
            evaluated = True
            accuracy_ax.plot(
                [eval_seconds(r) for r in evaluations],
                [r["test_accuracy"] for r in evaluations],
                color=run_color(index),
                marker="o",
                markersize=3,
            )
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("Training loss vs wall-clock seconds")
    accuracy_ax.set_ylabel("test accuracy")
    accuracy_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    accuracy_ax.set_title("Test accuracy vs training seconds")
    if not evaluated:
        accuracy_ax.text(
            0.5, 0.5, "no evaluations yet", ha="center", transform=accuracy_ax.transAxes
        )
    loss_ax.set_xlabel("seconds since training started")
    accuracy_ax.set_xlabel("seconds of training (evaluations left out where recorded)")
    for ax in (loss_ax, accuracy_ax):
        ax.grid(True, which="major", alpha=0.3)
    _run_legend(figure, runs)
    return figure


def plot_quality_panels(
    panels: Mapping[str, Mapping[str, Series]],
    *,
    ylabel: str,
    targets: Mapping[str, float] | None = None,
    percent: bool = False,
    log_x: bool = False,
    window: float | None = None,
) -> Figure:
    """One panel per key of ``panels`` (e.g. a bandwidth), one line per system; the
    same system has the same colour in every panel; ``targets`` draws each
    panel's target as a dashed line and, with ``window``, shows only the y range
    within ``window`` of it (where the systems are told apart)."""
    systems: list[str] = []
    for series in panels.values():
        systems += [name for name in series if name not in systems]
    figure, axes = _figure(max(len(panels), 1), height=PANEL_SIZE[1] + 0.4)
    for ax, (title, series) in zip(axes, panels.items(), strict=False):
        for name, (x, y) in series.items():
            style = {"color": run_color(systems.index(name)), "marker": "o", "markersize": 2.5}
            ax.plot(x, y, lw=1.4, **style)
        if targets and title in targets:
            ax.axhline(targets[title], color="0.3", linestyle="--", lw=1)
            _near_target(ax, targets[title], [y for _, y in series.values()], window)
        ax.set_title(title)
        ax.set_xlabel("seconds of training (log scale)" if log_x else "seconds of training")
        ax.set_ylabel(ylabel)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(PlainLogFormatter())
            ax.xaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
        if percent:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=run_color(i), lw=2) for i in range(len(systems))]
    handles.append(Line2D([], [], color="0.3", linestyle="--"))
    figure.legend(
        handles,
        [*systems, "target"],
        loc="outside lower center",
        ncols=min(len(handles), 4),
        frameon=False,
    )
    return figure


def _near_target(ax: Any, goal: float, values: list[Sequence[float]], window: float | None) -> None:
    if window is None:
        return
    flat = [v for series in values for v in series]
    if flat:
        low, high = max(min(flat), goal - window), min(max(flat), goal + window)
        pad = 0.05 * max(high - low, 1e-9)
        ax.set_ylim(low - pad, high + pad)


TIME_PLOTS: dict[str, Callable[[Sequence[Run]], Figure]] = {"tta.png": plot_time_to_accuracy}
