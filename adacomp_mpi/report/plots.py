"""The report's figures, drawn headless with matplotlib's Agg canvas (no pyplot, no display).

Each plot function takes the labelled runs and returns a Figure; ``PLOTS`` maps
the output file name to the function. Colour always means the run (the same
colour in every figure); line style means the layer kind or the phase.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, LogFormatter, NullFormatter, PercentFormatter

from adacomp_mpi.codec.specs import LAYER_KINDS

from .runs import Run
from .schema import TIME_PHASES

PANEL_SIZE = (5.6, 4.0)
SMOOTH_POINTS = 40  # a loss curve longer than this gets a moving average over ~n/40 steps
KIND_STYLES: dict[str, object] = {
    "all": "-",
    "conv": (0, (6, 2)),
    "fc": (0, (1, 1.5)),
    "recurrent": (0, (6, 2, 1, 2)),
    "embedding": (0, (3, 1, 1, 1, 1, 1)),
    "other": (0, (2, 3)),
}
PHASE_COLORS = dict(zip(TIME_PHASES, ("C0", "C1", "C3", "C2", "C4"), strict=True))
PHASE_LABELS = {
    "forward_backward": "forward + backward",
    "encode": "encode",
    "communicate": "communicate",
    "decode": "decode",
    "optimizer": "optimizer",
}


def run_color(index: int) -> str:
    return f"C{index % 10}"


def _figure(columns: int, *, height: float = PANEL_SIZE[1]) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, list(figure.subplots(1, columns, squeeze=False)[0])


def _bytes_axis(ax: Axes) -> None:
    """Log x axis labelled 1 MB, 10 MB, ...: dense and compressed runs differ by ~100x.

    Call after plotting: when the data spans fewer than two labelled decades, the
    limits are widened to whole decades so that at least two labels show.
    """
    ax.set_xscale("log")
    low, high = ax.dataLim.intervalx
    if np.isfinite([low, high]).all() and 0 < low <= high:
        first, last = np.ceil(np.log10(low)), np.floor(np.log10(high))
        if last - first < 1:
            ax.set_xlim(10 ** np.floor(np.log10(low)), 10 ** np.ceil(np.log10(high) + 1e-9))
    ax.xaxis.set_major_formatter(EngFormatter(unit="B"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("cumulative bytes sent (all ranks, log scale)")


def _run_legend(figure: Figure, runs: Sequence[Run]) -> None:
    handles = [Line2D([], [], color=run_color(i), lw=2) for i in range(len(runs))]
    figure.legend(
        handles,
        [run.label for run in runs],
        loc="outside lower center",
        ncols=min(len(runs), 3),
        frameon=False,
    )


class PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which ticks to label, written 0.6 and 2 instead of 6e-01."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _plain_log_y(ax: Axes) -> None:
    """Log y with plain labels; minor ticks labelled only when the range is short."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PlainLogFormatter())
    ax.yaxis.set_minor_formatter(
        PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6))
    )


def cumulative_bytes(run: Run) -> np.ndarray:
    return np.cumsum(np.asarray(run.column("bytes_sent"), dtype=np.float64))


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each ``window`` consecutive values (length n - window + 1)."""
    return np.convolve(values, np.ones(window) / window, mode="valid")


def smoothing_window(points: int) -> int:
    """Steps per moving average: 1 (none) up to SMOOTH_POINTS points, then ~points/40."""
    return max(1, points // SMOOTH_POINTS)


def smoothed(x: np.ndarray, y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The moving average of ``y``, placed at the last x of each window."""
    return x[window - 1 :], moving_average(y, window)


def plot_smoothed(ax: Axes, x: np.ndarray, y: np.ndarray, *, color: str) -> bool:
    """The raw curve faint, its moving average on top; whether it was smoothed."""
    window = smoothing_window(len(y))
    if window > 1:
        ax.plot(x, y, color=color, lw=0.6, alpha=0.25)
    ax.plot(*smoothed(x, y, window), color=color)
    return window > 1


def plot_loss(runs: Sequence[Run]) -> Figure:
    """Training loss against steps and against bytes: what compression costs in convergence."""
    figure, (by_step, by_bytes) = _figure(2)
    smoothed_any = False
    for index, run in enumerate(runs):
        steps = np.asarray(run.column("step"), dtype=np.float64)
        loss = np.asarray(run.column("loss"), dtype=np.float64)
        sent = cumulative_bytes(run)
        for ax, x in ((by_step, steps), (by_bytes, sent)):
            smoothed_any |= plot_smoothed(ax, x, loss, color=run_color(index))
    all_loss = np.concatenate([np.asarray(run.column("loss"), dtype=np.float64) for run in runs])
    finite = all_loss[np.isfinite(all_loss)]
    # log y only pays off when the loss falls by more than 10x over the runs
    logarithmic = finite.size > 0 and finite.min() > 0 and finite.max() > 10 * finite.min()
    for ax in (by_step, by_bytes):
        ax.set_ylabel("training loss" + (" (log scale)" if logarithmic else ""))
        if logarithmic:
            _plain_log_y(ax)
        ax.grid(True, which="major", alpha=0.3)
    by_step.set_xlabel("step")
    _bytes_axis(by_bytes)
    by_step.set_title("Training loss vs step")
    by_bytes.set_title("Training loss vs bytes sent")
    if smoothed_any:
        figure.suptitle("faint: loss of each step; solid: moving average", fontsize="small")
    _run_legend(figure, runs)
    return figure


def plot_accuracy(runs: Sequence[Run]) -> Figure:
    """Test accuracy after each epoch, against steps and against bytes sent by then."""
    figure, (by_step, by_bytes) = _figure(2)
    for index, run in enumerate(runs):
        if not run.epochs:
            continue
        steps = np.asarray(run.column("step"))
        at = np.asarray([record["step"] for record in run.epochs])
        accuracy = [record["test_accuracy"] for record in run.epochs]
        sent = cumulative_bytes(run)[np.clip(np.searchsorted(steps, at), 0, len(steps) - 1)]
        style = {"color": run_color(index), "marker": "o", "markersize": 4}
        by_step.plot(at, accuracy, **style)
        by_bytes.plot(sent, accuracy, **style)
    for ax in (by_step, by_bytes):
        ax.set_ylabel("test accuracy")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(True, which="major", alpha=0.3)
        if not any(run.epochs for run in runs):
            ax.text(0.5, 0.5, "no epoch records", ha="center", transform=ax.transAxes)
    by_step.set_xlabel("step")
    _bytes_axis(by_bytes)
    by_step.set_title("Test accuracy vs step (after each epoch)")
    by_bytes.set_title("Test accuracy vs bytes sent")
    _run_legend(figure, runs)
    return figure


def plot_compression(runs: Sequence[Run]) -> Figure:
    """Per-step compression ratio, overall and per layer kind (colour: run, style: kind)."""
    figure, (ax,) = _figure(1, height=PANEL_SIZE[1] + 0.6)
    figure.set_figwidth(PANEL_SIZE[0] * 1.7)
    kinds_seen: list[str] = []
    smoothed_any = False
    for index, run in enumerate(runs):
        steps = np.asarray(run.column("step"), dtype=np.float64)
        series = {"all": run.column("compression_ratio")}
        for kind in LAYER_KINDS:
            if all(kind in record["compression_ratio_by_kind"] for record in run.steps):
                series[kind] = [record["compression_ratio_by_kind"][kind] for record in run.steps]
        window = smoothing_window(len(steps))
        smoothed_any |= window > 1
        for kind, ratios in series.items():
            ax.plot(
                *smoothed(steps, np.asarray(ratios, dtype=np.float64), window),
                color=run_color(index),
                linestyle=KIND_STYLES[kind],
                lw=2.0 if kind == "all" else 1.3,
            )
            if kind not in kinds_seen:
                kinds_seen.append(kind)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(EngFormatter(unit="x", sep=""))
    ax.set_xlabel("step")
    ax.set_ylabel("compression ratio (dense bytes / bytes sent, log scale)")
    ax.set_title(
        "Compression ratio per step, by layer kind" + (" (moving average)" if smoothed_any else "")
    )
    ax.grid(True, which="major", alpha=0.3)
    run_handles = [Line2D([], [], color=run_color(i), lw=2) for i in range(len(runs))]
    kind_handles = [Line2D([], [], color="0.2", linestyle=KIND_STYLES[k]) for k in kinds_seen]
    kind_labels = ["all tensors" if k == "all" else k for k in kinds_seen]
    figure.legend(
        run_handles,
        [run.label for run in runs],
        title="run (colour)",
        loc="outside right upper",
        frameon=False,
    )
    figure.legend(
        kind_handles,
        kind_labels,
        title="layer kind (line style)",
        loc="outside right lower",
        frameon=False,
        handlelength=3.5,
    )
    return figure


def plot_time(runs: Sequence[Run]) -> Figure:
    """Where the step time went, per run: seconds and share of each phase (stacked bars).

    Only the five step phases are stacked: on short runs start-up and evaluation
    would otherwise swamp them. The whole wall time is written next to each bar.
    """
    height = max(PANEL_SIZE[1] * 0.7, 1.2 + 0.55 * len(runs))
    figure, (seconds_ax, share_ax) = _figure(2, height=height)
    figure.get_layout_engine().set(wspace=0.06)  # the panels' end tick labels would touch
    rows = np.arange(len(runs))
    table = np.asarray(
        [[run.time_breakdown()[phase] for phase in TIME_PHASES] for run in runs], np.float64
    )
    totals = table.sum(axis=1)
    shares = table / np.where(totals > 0, totals, 1.0)[:, None]
    for ax, values in ((seconds_ax, table), (share_ax, shares)):
        left = np.zeros(len(runs))
        for column, phase in enumerate(TIME_PHASES):
            ax.barh(
                rows,
                values[:, column],
                left=left,
                height=0.6,
                color=PHASE_COLORS[phase],
                label=PHASE_LABELS[phase],
            )
            left += values[:, column]
        ax.set_yticks(rows, [run.label for run in runs])
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    for row, (total, run) in enumerate(zip(totals, runs, strict=True)):
        wall = float(run.summary["wall_seconds"])
        note = f" {total:.3g} s (wall {wall:.3g} s)"
        seconds_ax.text(total, row, note, va="center", fontsize="small")
    seconds_ax.set_xlim(0, max(float(totals.max()), 1e-3) * 1.6)  # room for the notes
    seconds_ax.set_xlabel("seconds (mean over ranks, summed over steps)")
    seconds_ax.set_title("Step time by phase")
    share_ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    share_ax.set_xlim(0, 1)
    share_ax.set_xlabel("share of step time")
    share_ax.set_title("Share of step time by phase")
    share_ax.tick_params(axis="y", labelleft=False)
    handles, labels = seconds_ax.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=5, frameon=False)
    return figure


PLOTS: dict[str, Callable[[Sequence[Run]], Figure]] = {
    "loss.png": plot_loss,
    "accuracy.png": plot_accuracy,
    "compression.png": plot_compression,
    "time.png": plot_time,
}
