"""docs/TTA.md from the saved cells of scripts/bench_tta.py (and only from them).

Reads every OUT/<cell>.json, computes each cell's target (dense's quality at the end of
its budget, minus 0.5 point of accuracy, or plus 2 % of perplexity) and each system's
time to reach it, and writes the tables, one figure per workload and world size (quality
against training seconds, one panel per bandwidth, drawn by adacomp_mpi.report), the
check of the targets, the cost model (scripts/cost_model.py) and the exact commands. Text
between the NOTES markers of an existing doc is kept: the hand-written reading of the
numbers survives a rerun.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ACCURACY_MARGIN = 0.005  # half a point below dense's final accuracy
PERPLEXITY_MARGIN = 0.02  # within 2 % of dense's final perplexity
LOOSE = 2.0  # a second, looser target for reference: twice the margin (1 point, 4 %)
RATE_ORDER = {"100mbit": 0, "1gbit": 1, "10gbit": 2}
NOTES_BEGIN, NOTES_END = "<!-- NOTES: kept when the doc is rebuilt -->", "<!-- /NOTES -->"
PEERS = ("ddp-fp32", "ddp-fp16", "ddp-psgd-r1", "ddp-psgd-r4")
ADACOMPS = ("adacomp", "adacomp-best")


def load_cells(out: Path) -> list[dict[str, Any]]:
    cells = [json.loads(path.read_text()) for path in sorted(Path(out).glob("*.json"))]
    return sorted(cells, key=lambda c: (c["ranks"], c["workload"], RATE_ORDER.get(c["rate"], 9)))


def higher_is_better(cell: Mapping[str, Any]) -> bool:
    return cell["metric"] != "test_perplexity"


def target(cell: Mapping[str, Any], *, scale: float = 1.0) -> float | None:
    """Dense's final quality less ``scale`` margins; None without a finished dense run."""
    dense = cell["systems"].get("dense", {})
    if "final_quality" not in dense:
        return None
    final = dense["final_quality"]
    if higher_is_better(cell):
        return final - scale * ACCURACY_MARGIN
    return final * (1 + scale * PERPLEXITY_MARGIN)


def time_to_target(cell: Mapping[str, Any], system: str, *, scale: float = 1.0) -> float | None:
    """Training seconds of the first evaluation at or past the target; None if never."""
    goal, result = target(cell, scale=scale), cell["systems"].get(system, {})
    if goal is None or "curve" not in result:
        return None
    for point in result["curve"]:
        good = point["quality"] >= goal if higher_is_better(cell) else point["quality"] <= goal
        if good:
            return float(point["seconds"])
    return None


def best_peer(cell: Mapping[str, Any]) -> tuple[str, float] | None:
    """The DDP peer that reached the target soonest, with its time."""
    times = [(s, time_to_target(cell, s)) for s in PEERS if s in cell["systems"]]
    reached = [(s, t) for s, t in times if t is not None]
    return min(reached, key=lambda pair: pair[1]) if reached else None


def speedup(base: float | None, this: float | None) -> str:
    return f"{base / this:.2f}x" if base is not None and this else "-"


def quality_text(cell: Mapping[str, Any], value: float) -> str:
    return f"{100 * value:.2f} %" if higher_is_better(cell) else f"{value:.3f}"


def cell_table(cell: Mapping[str, Any]) -> list[str]:
    dense_ttt = time_to_target(cell, "dense")
    dense_loose = time_to_target(cell, "dense", scale=LOOSE)
    peer = best_peer(cell)
    dense_bytes = cell["systems"].get("dense", {}).get("link_bytes")
    lines = [
        "| system | time to target s | dense / this | best DDP / this | to the loose target s "
        "| dense / this (loose) | s per step | final quality | bytes over the link "
        "| compression ratio | link bytes vs dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in cell["systems"].items():
        if "failed" in result:
            lines.append(f"| {name} | failed: {result['failed'][:80]} | | | | | | | | | |")
            continue
        ttt = time_to_target(cell, name)
        loose = time_to_target(cell, name, scale=LOOSE)
        ratio = result.get("compression_ratio")
        lines.append(
            f"| {name} | {f'{ttt:.1f}' if ttt is not None else 'not reached'} "
            f"| {speedup(dense_ttt, ttt)} | {speedup(peer[1] if peer else None, ttt)} "
            f"| {f'{loose:.1f}' if loose is not None else 'not reached'} "
            f"| {speedup(dense_loose, loose)} "
            f"| {result['seconds_per_step'] * 1e3:.1f} ms "
            f"| {quality_text(cell, result['final_quality'])} "
            f"| {result['link_bytes'] / 1e6:,.1f} MB "
            f"| {f'{ratio:.0f}x' if ratio else '-'} "
            f"| {speedup(dense_bytes, result['link_bytes']) if dense_bytes else '-'} |"
        )
    return lines


def load_range(cells: Sequence[Mapping[str, Any]]) -> str:
    loads = [
        r[key]
        for c in cells
        for r in c["systems"].values()
        for key in ("load_before", "load_after")
        if key in r
    ]
    return f"{min(loads):.2f}-{max(loads):.2f}" if loads else "n/a"


def total_minutes(cells: Sequence[Mapping[str, Any]]) -> float:
    return sum(r.get("wall_seconds", 0.0) for c in cells for r in c["systems"].values()) / 60


def figure(group: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Quality against training seconds, one panel per bandwidth, one line per system."""
    from adacomp_mpi.report.timeplots import plot_quality_panels

    panels, targets = {}, {}
    for cell in group:
        title = f"{cell['rate']} (measured {cell['link_gbit_s']:.2f} Gbit/s)"
        panels[title] = {
            name: ([p["seconds"] for p in r["curve"]], [p["quality"] for p in r["curve"]])
            for name, r in cell["systems"].items()
            if r.get("curve")
        }
        if (goal := target(cell)) is not None:
            targets[title] = goal
    first = group[0]
    accuracy = higher_is_better(first)
    plot = plot_quality_panels(
        panels,
        ylabel="test accuracy" if accuracy else "test perplexity",
        targets=targets,
        percent=accuracy,
        log_x=True,
        window=0.1 if accuracy else 0.5 * min(targets.values(), default=1.0),
    )
    plot.suptitle(f"{first['workload']} ({first['model']}), {first['ranks']} ranks")
    plot.savefig(path, dpi=100)
    return path


def target_checks(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """The issue's targets on the FC model with 2 ranks, met or missed and by how much."""
    by_rate = {c["rate"]: c for c in cells if c["workload"] == "mlp" and c["ranks"] == 2}
    goals = [
        ("1gbit", "dense", 4.0, "at 1 Gbit/s, at least 4x sooner than dense"),
        ("1gbit", "peer", 2.0, "at 1 Gbit/s, at least 2x sooner than the best DDP peer"),
        ("100mbit", "dense", 15.0, "at 100 Mbit/s, at least 15x sooner than dense"),
        ("10gbit", "dense", 1 / 1.3, "on the fastest link, no more than 1.3x slower than dense"),
    ]
    lines = []
    for rate, against, factor, text in goals:
        cell = by_rate.get(rate)
        if cell is None:
            lines.append(f"- {text}: not measured")
            continue
        if against == "dense":
            base, base_name = time_to_target(cell, "dense"), "dense"
        else:
            peer = best_peer(cell)
            base, base_name = (peer[1], peer[0]) if peer else (None, "no DDP peer")
        for system in ADACOMPS:
            if system not in cell["systems"]:
                continue
            this = time_to_target(cell, system)
            if base is None or this is None:
                what = "target not reached by " + (system if this is None else base_name)
                lines.append(f"- {text} ({system}): cannot tell, {what}")
                continue
            got = base / this
            verdict = "met" if got >= factor else f"missed by {factor / got:.2f}x"
            lines.append(f"- {text} ({system} vs {base_name}): {got:.2f}x, {verdict}")
    return lines


def kept_notes(doc: Path) -> str:
    if doc.exists():
        text = doc.read_text()
        if NOTES_BEGIN in text and NOTES_END in text:
            return text[text.index(NOTES_BEGIN) : text.index(NOTES_END) + len(NOTES_END)]
    return f"{NOTES_BEGIN}\n(No reading of the numbers written yet.)\n{NOTES_END}"


def _relative(path: Path, start: Path) -> str:
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path)


def write_doc(out: Path, *, doc: Path, quick: bool = False) -> list[Path]:
    """Rebuild ``doc`` and its figures from OUT/*.json; the paths written."""
    from cost_model import cost_model_markdown

    cells = load_cells(out)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["workload"], cell["ranks"]), []).append(cell)
    written = []
    command = "sudo .venv/bin/python scripts/bench_tta.py" + (" --quick" if quick else "")
    lines = [
        "# Time to accuracy over a throttled link",
        "",
        "How long each system takes to reach the same test quality, when the network",
        "between two hosts is 100 Mbit/s, 1 Gbit/s or 10 Gbit/s. Written by",
        "`scripts/bench_tta.py` from its saved results (`docs/tta/*.json`); rebuild the",
        "whole page, every number and figure, with one command (root, after",
        "`scripts/fetch_datasets.sh`):",
        "",
        f"    {command}",
        "",
        "(`--only 'mlp-*-n2'` reruns some cells and keeps the others; `--report-only`",
        "rebuilds this page from the saved JSON; `--quick` is a one-cell smoke run.)",
        "",
    ]
    if cells:
        lines += [
            f"Machine: {cells[0]['machine']}. Load average (1 min) before and after each run: "
            f"{load_range(cells)}. The saved runs took {total_minutes(cells):.0f} min of wall "
            f"time in all (start-up and evaluations included).",
            "",
        ]
    lines += [kept_notes(doc), "", "## How it is measured", "", *METHOD, ""]
    lines += ["## Targets (FC model, 2 ranks)", "", *(target_checks(cells) or ["- none run"]), ""]
    for (workload, ranks), group in groups.items():
        first = group[0]
        options = " ".join(f"--model-option {o}" for o in first["model_options"])
        oversub = " (2 per host: 4 ranks on 2 cores, oversubscribed)" if ranks > 2 else ""
        lines += [
            f"## {workload}: `--model {first['model']} {options}`".rstrip() + f", {ranks} ranks",
            "",
            f"{first['dataset']}, {first['steps']} steps of batch {first['batch_size']} per rank"
            f"{oversub}, {first['optimizer']} lr {first['lr']} "
            f"({first.get('lr_schedule', 'constant')} schedule), evaluation every "
            f"{first['eval_every']} steps; quality: {first['metric']}.",
            "",
        ]
        picture = out / f"{workload}-n{ranks}.png"
        written.append(figure(group, picture))
        lines += [f"![{workload}, {ranks} ranks]({_relative(picture, doc.parent)})", ""]
        for cell in group:
            goal = target(cell)
            goal_text = quality_text(cell, goal) if goal is not None else "n/a (no dense run)"
            loose = target(cell, scale=LOOSE)
            loose_text = quality_text(cell, loose) if loose is not None else "n/a"
            lines += [
                f"### {cell['rate']} (one TCP stream measured {cell['link_gbit_s']:.2f} Gbit/s), "
                f"target {goal_text}, loose target {loose_text}",
                "",
                *cell_table(cell),
                "",
            ]
    lines += ["## Cost model", "", *cost_model_markdown(cells), ""]
    lines += ["## Commands", ""]
    for cell in cells:
        lines += [f"{cell['cell']} ({cell['date']}):", ""]
        lines += [f"    {r['command']}" for r in cell["systems"].values()]
        lines.append("")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines).rstrip() + "\n")
    return [doc, *written]


METHOD = [
    "- Two network-namespace hosts joined by a veth (`scripts/netns/twohost.sh`), shaped",
    "  both ways by `tc tbf` (burst 256 kB); MPI is forced onto libfabric's tcp provider",
    "  and gloo onto the link (`GLOO_SOCKET_IFNAME=vnet0`, `MASTER_ADDR` on the link),",
    "  so every byte between the hosts crosses the veth. The rate in each heading is",
    "  what one TCP stream measured through the shaped link just before the cell:",
    "  the namespaces share the machine's two cores, so a fast setting is capped by",
    "  the CPU rather than by tbf.",
    "- In a cell every system trains the same model from the same seed on the same",
    "  data in the same order, with the same batch, optimizer, learning rate and step",
    "  budget, and evaluates on the whole test split every N steps. Time is each",
    "  program's training clock: from the start of training (after start-up: MPI or",
    "  gloo set-up, data, model), with the time spent in evaluations left out, the same",
    "  way in both programs (`train_seconds` in their eval records, docs/METRICS.md).",
    "- Target: dense's quality at the end of its budget, minus 0.5 point of accuracy",
    "  (perplexity: plus 2 %). Time to target: the training seconds of the first",
    "  evaluation at or past it (so it is quantised to the evaluation interval).",
    "  Beside it, for reference, a loose target twice as far (1 point; perplexity 4 %):",
    "  where the strict one is not reached, it still shows how much sooner a system",
    "  gets close.",
    "- Bytes over the link: the veth's counters (rx + tx of one end) over the whole",
    "  run, start-up and evaluations included: everything MPI or gloo sent. Compression",
    "  ratio: the trainer's own (dense float32 bytes / payload bytes); the last column",
    "  compares what crossed the link.",
    "- Systems: `dense` = `adacomp-train --compression none` (MPI Allreduce, fp32);",
    "  `adacomp` = `adacomp-train` with its defaults; `adacomp-best` = with the best",
    "  documented options (`BEST_OPTIONS` in the script; the flags each run got are in",
    "  its command below); `ddp-*` = `scripts/ddp_peer.py`, PyTorch DDP over gloo as it",
    "  ships (buckets, overlap), plain fp32, with the fp16 compression hook, and with",
    "  the PowerSGD hook (matrix rank 1 and 4, its error feedback, 10 steps of",
    "  allreduce warm-up). Every rank runs with `OMP_NUM_THREADS=1`.",
]
