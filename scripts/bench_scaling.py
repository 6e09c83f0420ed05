"""Bytes per rank per step and step time as ranks are added: dense Allreduce,
AdaComp over Allgatherv, and the shared-index mode (``--compression scalecom``).

Every cell is one real ``adacomp-train`` job (same model, data, seed, step
budget). From its ``metrics.jsonl`` (step records after the first ``--skip``):

* payload bytes per rank per step: ``bytes_sent / N`` (mean over ranks),
  ``bytes_sent_max_rank`` and ``bytes_received_per_rank`` (docs/METRICS.md);
* step time: the median of the differences of consecutive ``wall_seconds``.

With ``--twohost`` the ranks run on two network-namespace hosts
(scripts/netns/twohost.sh, root needed, N/2 ranks each, MPI forced onto TCP)
and the bytes that crossed the veth link are counted too: each cell runs twice,
with ``--steps`` and ``2 x --steps`` optimizer steps, and the difference of
the two counts over the difference in steps is the link traffic of one step,
without start-up and shutdown (model broadcast, evaluation, summaries).

    .venv/bin/python scripts/bench_scaling.py --ranks 2,3,4,8 --steps 300 --skip 100
    sudo .venv/bin/python scripts/bench_scaling.py --twohost --ranks 2,4,8 --steps 30
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import click
from twohost import TWOHOST, twohost

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent
MODES = ("none", "adacomp", "scalecom")


def _steps(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "step"]


def _job(mode: str, steps: int, out: Path, job: list[str]) -> list[str]:
    return [
        str(VENV / "adacomp-train"),
        *job,
        "--compression",
        mode,
        "--max-steps",
        str(steps),
        "--epochs",
        "100",
        "--quiet",
        "--stall-timeout",
        "300",
        "--output-dir",
        str(out),
        "--overwrite",
    ]


def _launch(ranks: int, command: list[str], prefix: str | None, timeout: float) -> None:
    if prefix is None:
        launcher = [str(VENV / "mpiexec"), "-n", str(ranks)]
    else:
        launcher = ["bash", str(TWOHOST), "mpiexec", prefix, "-ppn", str(ranks // 2)]
        launcher += ["-n", str(ranks)]
    done = subprocess.run(
        [*launcher, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        raise click.ClickException(f"{command} failed: {done.stderr[-800:]}")


def _cell(mode: str, ranks: int, steps: int, skip: int, job: list[str], out: Path,
          prefix: str | None, timeout: float) -> dict:  # fmt: skip
    where = out / f"{mode}-n{ranks}"
    before = int(twohost("bytes", prefix)) if prefix else 0
    _launch(ranks, _job(mode, steps, where, job), prefix, timeout)
    records = _steps(where)[skip:]
    row = {
        "mode": mode,
        "ranks": ranks,
        "sent_per_rank": statistics.mean(r["bytes_sent"] / ranks for r in records),
        "sent_max_rank": statistics.mean(r["bytes_sent_max_rank"] for r in records),
        "received_per_rank": statistics.mean(r["bytes_received_per_rank"] for r in records),
        "dense_per_rank": records[0]["dense_bytes"] / ranks,
        "step_ms": 1e3
        * statistics.median(
            b["wall_seconds"] - a["wall_seconds"] for a, b in itertools.pairwise(records)
        ),
    }
    if prefix:
        first = int(twohost("bytes", prefix)) - before
        before = int(twohost("bytes", prefix))
        _launch(ranks, _job(mode, 2 * steps, where, job), prefix, timeout)
        second = int(twohost("bytes", prefix)) - before
        row["link_per_step"] = (second - first) / steps
    return row


def _table(rows: list[dict]) -> str:
    link = any("link_per_step" in r for r in rows)
    head = "| mode | N | sent/rank/step | max rank | received/rank/step | step ms |"
    head += " link bytes/step |" if link else ""
    lines = [head, "|---|---|---|---|---|---|" + ("---|" if link else "")]
    for r in rows:
        line = (
            f"| {r['mode']} | {r['ranks']} | {r['sent_per_rank']:,.0f} | {r['sent_max_rank']:,.0f}"
            f" | {r['received_per_rank']:,.0f} | {r['step_ms']:.1f} |"
        )
        if link:
            line += f" {r.get('link_per_step', 0):,.0f} |"
        lines.append(line)
    return "\n".join(lines)


@click.command()
@click.option("--ranks", default="2,3,4,8", help="Comma-separated world sizes.")
@click.option("--modes", default=",".join(MODES), help=f"Comma-separated: {MODES}.")
@click.option("--steps", type=click.IntRange(min=2), default=60)
@click.option("--skip", type=click.IntRange(min=0), default=10, help="First steps left out.")
@click.option("--model", default="mlp")
@click.option("--dataset", default="fashion_mnist")
@click.option("--twohost", is_flag=True, help="Two netns hosts; also count link bytes.")
@click.option("--extra", default="", help="More adacomp-train options, space-separated.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench_scaling"))
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
@click.option("--timeout", type=float, default=600.0, help="Seconds per job.")
def main(ranks: str, modes: str, steps: int, skip: int, model: str, dataset: str,
         twohost: bool, extra: str, out: Path, json_out: Path | None,
         timeout: float) -> None:  # fmt: skip
    """Run every (mode, N) cell once and print the Markdown table."""
    sizes = [int(n) for n in ranks.split(",")]
    names = [m.strip() for m in modes.split(",") if m.strip()]
    job = ["--model", model, "--dataset", dataset, *extra.split()]
    if (data := REPO / "data" / dataset).is_dir():
        job += ["--data-path", str(data)]
    prefix = ("bs" + uuid.uuid4().hex[:8]) if twohost else None
    if prefix:
        twohost("up", prefix)
    try:
        rows = [
            _cell(m, n, steps, skip, job, out.resolve(), prefix, timeout)
            for n in sizes
            for m in names
        ]
    finally:
        if prefix:
            twohost("down", prefix)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))
    click.echo(f"{model} on {dataset}, {steps} steps (first {skip} left out), "
               f"{'two netns hosts' if twohost else 'one host'}\n")  # fmt: skip
    click.echo(_table(rows))


if __name__ == "__main__":
    main()
