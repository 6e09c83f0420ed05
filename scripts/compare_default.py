"""Run the default job dense and with AdaComp side by side and print a Markdown table.

    python scripts/compare_default.py --ranks 4 --seeds 0 1 2

Each run is a real ``mpiexec -n RANKS adacomp-train`` whose summary.json is read back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import click

BIN = Path(sys.executable).parent


def run(ranks: int, compression: str, seed: int, workdir: Path, extra: tuple[str, ...]) -> dict:
    summary = workdir / f"{compression}-{seed}.json"
    command = [
        str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "adacomp-train"),
        "--compression", compression, "--seed", str(seed), "--quiet",
        "--output-dir", str(workdir / f"{compression}-{seed}"), "--summary", str(summary), *extra,
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=900)
    return json.loads(summary.read_text())


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--ranks", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seeds", type=int, multiple=True, default=(0, 1, 2), show_default=True)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def main(ranks: int, seeds: tuple[int, ...], extra: tuple[str, ...]) -> None:
    """Dense vs AdaComp on the default job; EXTRA options go to adacomp-train."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            dense = run(ranks, "none", seed, Path(tmp), extra)
            ada = run(ranks, "adacomp", seed, Path(tmp), extra)
            rows.append((seed, dense, ada))
    click.echo(f"ranks: {ranks}; extra options: {' '.join(extra) or '(none)'}\n")
    click.echo(
        "| seed | dense acc | AdaComp acc | delta (points) | ratio | bits/sent | "
        "density | params identical | wall dense / AdaComp (s) |"
    )
    click.echo("|---|---|---|---|---|---|---|---|---|")
    for seed, dense, ada in rows:
        delta = 100 * (ada["test_accuracy"] - dense["test_accuracy"])
        click.echo(
            f"| {seed} | {dense['test_accuracy']:.4f} | {ada['test_accuracy']:.4f} | "
            f"{delta:+.2f} | {ada['compression_ratio']:.1f}x | "
            f"{ada['bits_per_sent_element']:.2f} | {ada['density']:.4f} | "
            f"{dense['params_identical'] and ada['params_identical']} | "
            f"{dense['wall_seconds']:.1f} / {ada['wall_seconds']:.1f} |"
        )
    mean_delta = sum(100 * (a["test_accuracy"] - d["test_accuracy"]) for _, d, a in rows) / len(
        rows
    )
    click.echo(f"\nmean accuracy delta: {mean_delta:+.2f} points")


if __name__ == "__main__":
    main()
