"""Test accuracy of dense, AdaComp (Allgatherv) and the shared-index mode
(``--compression scalecom``) side by side: the same model, data, seed and
budget for each, one real ``adacomp-train`` job per cell.

    .venv/bin/python scripts/bench_scaling_accuracy.py --model mlp --ranks 4,8 --epochs 1
    .venv/bin/python scripts/bench_scaling_accuracy.py --model char_lstm \\
        --dataset shakespeare --ranks 4 --max-steps 300
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent


def _cell(mode: str, ranks: int, seed: int, job: list[str], out: Path, timeout: float) -> dict:
    where = out / f"{mode}-n{ranks}-s{seed}"
    command = [str(VENV / "mpiexec"), "-n", str(ranks), str(VENV / "adacomp-train"), *job]
    command += ["--compression", mode, "--seed", str(seed), "--quiet", "--overwrite"]
    command += ["--stall-timeout", "600", "--output-dir", str(where)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    if done.returncode != 0:
        raise click.ClickException(f"{mode} n={ranks} failed: {done.stderr[-800:]}")
    summary = json.loads((where / "summary.json").read_text())
    return {
        "mode": mode,
        "ranks": ranks,
        "seed": seed,
        "steps": summary["steps"],
        "test_accuracy": summary["test_accuracy"],
        "test_loss": summary["test_loss"],
        "compression_ratio": summary["compression_ratio"],
        "params_identical": summary["params_identical"],
        "wall_seconds": summary["wall_seconds"],
    }


@click.command()
@click.option("--model", default="mlp")
@click.option("--dataset", default="fashion_mnist")
@click.option("--ranks", default="4,8")
@click.option("--modes", default="none,adacomp,scalecom")
@click.option("--seeds", default="0")
@click.option("--epochs", type=click.IntRange(min=1), default=1)
@click.option("--max-steps", type=click.IntRange(min=0), default=0)
@click.option("--extra", default="", help="More adacomp-train options, space-separated.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/scaling_accuracy"))
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
@click.option("--timeout", type=float, default=1800.0, help="Seconds per job.")
def main(model: str, dataset: str, ranks: str, modes: str, seeds: str, epochs: int,
         max_steps: int, extra: str, out: Path, json_out: Path | None,
         timeout: float) -> None:  # fmt: skip
    """Print one Markdown row per (N, mode, seed)."""
    job = ["--model", model, "--dataset", dataset, "--epochs", str(epochs)]
    job += ["--max-steps", str(max_steps), *extra.split()]
    if (data := REPO / "data" / dataset).is_dir():
        job += ["--data-path", str(data)]
    click.echo(
        "| model | N | mode | seed | steps | test accuracy | test loss | ratio | identical |"
    )
    click.echo("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in (int(r) for r in ranks.split(",")):
        for seed in (int(s) for s in seeds.split(",")):
            for mode in modes.split(","):
                r = _cell(mode, n, seed, job, (out / model).resolve(), timeout)
                rows.append(r)
                click.echo(
                    f"| {model} | {n} | {mode} | {seed} | {r['steps']} | "
                    f"{r['test_accuracy']:.4f} | {r['test_loss']:.4f} | "
                    f"{r['compression_ratio']:.1f}x | {r['params_identical']} |"
                )
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
