"""Wall time of the same training job over a throttled link, system by system.

Two network-namespace hosts (scripts/netns/twohost.sh, root needed), one rank
each, the link shaped with tc tbf to ``--rate``; MPI is forced onto TCP so
everything crosses the veth. Every system trains the same model on the same
data in the same order with the same optimizer, seed and step budget:

  dense        adacomp-train --compression none (MPI Allreduce, fp32)
  adacomp      adacomp-train (AdaComp, overlap on)
  ddp-fp32     scripts/ddp_peer.py --mode fp32 (PyTorch DDP over gloo)
  ddp-fp16     scripts/ddp_peer.py --mode fp16
  ddp-psgd-r1  scripts/ddp_peer.py --mode powersgd --powersgd-rank 1
  ddp-psgd-r4  scripts/ddp_peer.py --mode powersgd --powersgd-rank 4

and reports wall seconds, final test accuracy, bytes that crossed the link
(the veth counters: everything MPI or gloo sent), and each system's speed-up
over dense and over the best DDP peer, measured side by side in one run.

    sudo .venv/bin/python scripts/bench_link.py --rate 1gbit --epochs 3
    .venv/bin/python scripts/bench_link.py --systems dense,adacomp --epochs 1
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
from twohost import TWOHOST, twohost

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent
PEER = REPO / "scripts" / "ddp_peer.py"
SYSTEMS: dict[str, list[str]] = {
    "dense": ["trainer", "--compression", "none"],
    "adacomp": ["trainer", "--compression", "adacomp"],
    "ddp-fp32": ["peer", "--mode", "fp32"],
    "ddp-fp16": ["peer", "--mode", "fp16"],
    "ddp-psgd-r1": ["peer", "--mode", "powersgd", "--powersgd-rank", "1"],
    "ddp-psgd-r4": ["peer", "--mode", "powersgd", "--powersgd-rank", "4"],
}


def _command(system: str, job: list[str], out: Path) -> list[str]:
    kind, *flags = SYSTEMS[system]
    if kind == "trainer":
        return [str(VENV / "adacomp-train"), *job, *flags, "--quiet", "--output-dir", str(out)]
    peer_env = ["-genv", "MASTER_ADDR", "10.10.0.1", "-genv", "MASTER_PORT", "29511"]
    peer_env += ["-genv", "GLOO_SOCKET_IFNAME", "vnet0"]
    return [*peer_env, str(VENV / "python"), str(PEER), *job, *flags, "--output-dir", str(out)]


def _run(prefix: str, system: str, job: list[str], out: Path, timeout: float) -> dict:
    before = int(twohost("bytes", prefix))
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(TWOHOST), "mpiexec", prefix, "-ppn", "1", "-n", "2",
         *_command(system, job, out)],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise click.ClickException(f"{system} failed ({done.returncode}): {done.stderr[-800:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "system": system,
        "wall_s": wall,
        "test_accuracy": summary["test_accuracy"],
        "link_bytes": int(twohost("bytes", prefix)) - before,
    }


def _table(rows: list[dict]) -> str:
    dense = next((r["wall_s"] for r in rows if r["system"] == "dense"), None)
    peers = [r["wall_s"] for r in rows if r["system"].startswith("ddp")]
    best_peer = min(peers) if peers else None
    lines = [
        "| system | wall s | test accuracy | bytes over the link | dense / this "
        "| best DDP / this |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs_dense = f"{dense / r['wall_s']:.2f}x" if dense else "-"
        vs_peer = f"{best_peer / r['wall_s']:.2f}x" if best_peer else "-"
        lines.append(
            f"| {r['system']} | {r['wall_s']:.1f} | {r['test_accuracy']:.4f} | "
            f"{r['link_bytes'] / 1e6:,.1f} MB | {vs_dense} | {vs_peer} |"
        )
    return "\n".join(lines)


@click.command()
@click.option("--rate", default="1gbit", help="tc tbf rate of the link, e.g. 100mbit, 1gbit.")
@click.option("--systems", default=",".join(SYSTEMS), help=f"Comma-separated: {list(SYSTEMS)}.")
@click.option("--dataset", default="fashion_mnist")
@click.option("--model", default="mlp")
@click.option("--epochs", type=click.IntRange(min=1), default=3)
@click.option("--batch-size", type=click.IntRange(min=1), default=16)
@click.option("--lr", type=float, default=0.01)
@click.option("--momentum", type=float, default=0.9)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench_link"))
@click.option("--timeout", type=float, default=900.0, help="Seconds per run.")
def main(
    rate: str, systems: str, dataset: str, model: str, epochs: int, batch_size: int,
    lr: float, momentum: float, out: Path, timeout: float,
) -> None:  # fmt: skip
    """Run each system once on the same two hosts and print the table (Markdown)."""
    names = [s.strip() for s in systems.split(",") if s.strip()]
    if unknown := sorted(set(names) - set(SYSTEMS)):
        raise click.BadParameter(f"unknown {unknown}; choose from {list(SYSTEMS)}")
    job = ["--dataset", dataset, "--model", model, "--epochs", str(epochs)]
    job += ["--batch-size", str(batch_size), "--lr", str(lr), "--momentum", str(momentum)]
    if (data := REPO / "data" / dataset).is_dir():
        job += ["--data-path", str(data)]
    prefix = "bl" + uuid.uuid4().hex[:8]
    twohost("up", prefix, rate)
    try:
        rows = [_run(prefix, s, job, (out / s).resolve(), timeout) for s in names]
    finally:
        twohost("down", prefix)
    click.echo(f"{model} on {dataset}, {epochs} epochs, batch {batch_size}/rank, lr {lr}, "
               f"2 hosts x 1 rank, link {rate}\n")  # fmt: skip
    click.echo(_table(rows))


if __name__ == "__main__":
    main()
