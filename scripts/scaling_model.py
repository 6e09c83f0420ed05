"""Per-step communication + codec cost of AdaComp over Allgatherv and of the
shared-index mode (``--compression scalecom``) projected to 1024 ranks: a
projection from measured constants, not a measurement.

Measured (inputs):
* payload sizes per rank per step from ``scripts/bench_scaling.py --json-out``
  (s: one AdaComp payload; V: the scalecom Allreduce vector; m: its index
  message; D: the dense gradient), averaged over the measured world sizes;
* codec seconds, timed here in one process on the same model layout with
  real gradients of 40 distinct batches (the fastest of the last 20 steps):
  AdaComp encode e_a and decode of one payload d_a; scalecom: the leader's
  selection + index coding + decoding + gather + residue update e_s, and the
  mean write d_s.

Model, for N ranks, link bandwidth B bytes/s per direction, latency alpha:

    dense     T = 2 (N-1)/N D/B + 2 ceil(log2 N) alpha                 (ring / Rabenseifner)
    adacomp   T = e_a + N d_a + (N-1) s/B + ceil(log2 N) alpha          (Allgatherv)
    scalecom  T = e_s + d_s + m/B + ceil(log2 N) alpha                  (pipelined broadcast)
                  + 2 (N-1)/N V/B + 2 ceil(log2 N) alpha                (Allreduce)

Compute (forward/backward) is the same in all three and left out. With
``--params P`` every size and codec time is scaled linearly to P parameters
(an assumption: same layer mix and density).

    .venv/bin/python scripts/scaling_model.py runs/scaling/local.json --model mlp \\
        --dataset fashion_mnist
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import click
import numpy as np
import torch

from adacomp_mpi.codec.api import decode_mean, encode
from adacomp_mpi.codec.indexcoding import METHOD_NAMES
from adacomp_mpi.codec.shared_indices import accumulate, commit, contribution, write_mean
from adacomp_mpi.codec.shared_selection import selection_of
from adacomp_mpi.codec.shared_wire import compressed_specs, pack_positions, unpack_positions
from adacomp_mpi.codec.specs import CompressionPolicy
from adacomp_mpi.codec.state import make_state
from adacomp_mpi.datasets import load_dataset
from adacomp_mpi.models import ModelInputs, build_model
from adacomp_mpi.train.layers import gradient_specs

REPO = Path(__file__).resolve().parents[1]
SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _sizes(rows: list[dict]) -> dict[str, float]:
    """s, V + m, m and D per rank, averaged over the measured world sizes."""

    def mean(mode: str, key: str) -> float:
        return float(np.mean([r[key] for r in rows if r["mode"] == mode]))

    leader_extra = np.mean(
        [r["sent_max_rank"] - r["sent_per_rank"] for r in rows if r["mode"] == "scalecom"]
    )
    ranks = np.mean([r["ranks"] for r in rows if r["mode"] == "scalecom"])
    m = float(leader_extra * ranks / (ranks - 1))  # max - mean = m (1 - 1/N)
    return {
        "s": mean("adacomp", "sent_per_rank"),
        "V": mean("scalecom", "sent_per_rank") - m / ranks,
        "m": m,
        "D": mean("none", "sent_per_rank"),
    }


def _fastest(step, batches: list, warm: int) -> float:
    """Seconds of the fastest of the steps after ``warm`` (a shared, loaded
    machine only ever makes a step slower)."""
    best = math.inf
    for index, batch in enumerate(batches):
        started = time.perf_counter()
        step(batch)
        if index >= warm:
            best = min(best, time.perf_counter() - started)
    return best


def _codec_seconds(model: str, dataset: str, steps: int = 40, warm: int = 20) -> dict:
    """e_a, d_a, e_s, d_s on this model's layout: ``steps`` real gradients of
    distinct batches in turn (the residues evolve as in training; the first
    ``warm`` steps are not timed)."""
    path = REPO / "data" / dataset
    data = load_dataset(dataset, path=path if path.is_dir() else None)
    torch.manual_seed(0)
    net = build_model(model, ModelInputs(data.input_shape, data.num_classes, data.task), {})
    specs, params = gradient_specs(net, CompressionPolicy())
    batches = []
    for index in range(steps):
        rows = slice(16 * index, 16 * (index + 1))
        net.zero_grad()
        logits = net(torch.from_numpy(data.x_train[rows]))
        target = torch.from_numpy(data.y_train[rows]).long()
        torch.nn.functional.cross_entropy(logits, target).backward()
        batches.append(
            {s.name: p.grad.numpy().reshape(-1).copy() for s, p in zip(specs, params, strict=True)}
        )
    state, payloads = make_state(specs), []
    e_a = _fastest(lambda g: payloads.append(encode(g, state)), batches, warm)
    d_a = _fastest(lambda ps: decode_mean(ps, specs), [payloads[-8:]] * 20, 0) / 8
    shared, methods = make_state(specs), METHOD_NAMES["auto"]
    per_bin = [selection_of(shared.config).count_for(s) for s in compressed_specs(specs)]
    out = {s.name: np.zeros(s.numel, np.float32) for s in specs}
    last = []

    def scalecom_step(grads: dict) -> None:  # the leader's share: select, code, gather, update
        positions = accumulate(grads, shared, leader=True)
        message = pack_positions(positions, specs, methods=methods, per_bin=per_bin)
        unpack_positions(message.data, specs)
        part = contribution(grads, shared, positions)
        commit(shared, positions, part.values)
        last[:] = [part, positions]

    e_s = _fastest(scalecom_step, batches, warm)
    d_s = _fastest(lambda _: write_mean(*last, specs, out, size=8), [None] * 20, 0)
    return {"e_a": e_a, "d_a": d_a, "e_s": e_s, "d_s": d_s, "P": sum(s.numel for s in specs)}


def project(n: int, k: dict[str, float], bandwidth: float, alpha: float) -> dict[str, float]:
    hops = math.ceil(math.log2(n))
    ring = 2 * (n - 1) / n
    return {
        "dense": ring * k["D"] / bandwidth + 2 * hops * alpha,
        "adacomp": k["e_a"] + n * k["d_a"] + (n - 1) * k["s"] / bandwidth + hops * alpha,
        "scalecom": k["e_s"] + k["d_s"] + k["m"] / bandwidth + hops * alpha
        + ring * k["V"] / bandwidth + 2 * hops * alpha,
    }  # fmt: skip


@click.command()
@click.argument("measured", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", default="mlp")
@click.option("--dataset", default="fashion_mnist")
@click.option("--gbit", type=float, default=10.0, help="Link bandwidth, Gbit/s per direction.")
@click.option("--alpha-us", type=float, default=5.0, help="Per-message latency, microseconds.")
@click.option(
    "--params",
    type=float,
    default=0,
    help="Scale every size and codec time linearly to this many parameters (0: as measured).",
)
def main(
    measured: Path, model: str, dataset: str, gbit: float, alpha_us: float, params: float
) -> None:
    """Print the constants and the projected table (Markdown)."""
    torch.set_num_threads(1)
    constants = _sizes(json.loads(measured.read_text())) | _codec_seconds(model, dataset)
    factor = params / constants["P"] if params else 1.0
    constants = {k: v * factor for k, v in constants.items()}
    bandwidth, alpha = gbit * 1e9 / 8, alpha_us * 1e-6
    click.echo(
        "constants: "
        + ", ".join(f"{k} = {v:,.0f} B" for k, v in constants.items() if k in "sVmD")
        + ", "
        + ", ".join(f"{k} = {v * 1e3:.3f} ms" for k, v in constants.items() if k not in "sVmDP")
        + f", P = {constants['P']:,.0f} parameters"
        + f"; B = {gbit:g} Gbit/s, alpha = {alpha_us:g} us\n"
    )
    click.echo("| N | dense ms | AdaComp-Allgatherv ms | scalecom ms | scalecom / AdaComp |")
    click.echo("|---|---|---|---|---|")
    for n in SIZES:
        t = project(n, constants, bandwidth, alpha)
        click.echo(
            f"| {n} | {t['dense'] * 1e3:.3f} | {t['adacomp'] * 1e3:.3f} | "
            f"{t['scalecom'] * 1e3:.3f} | {t['scalecom'] / t['adacomp']:.2f} |"
        )
    for n in range(2, 1025):  # the exact crossover, not just among the listed sizes
        t = project(n, constants, bandwidth, alpha)
        if t["scalecom"] < t["adacomp"]:
            click.echo(f"\nscalecom is projected cheaper than AdaComp-Allgatherv from N = {n}")
            break
    else:
        click.echo("\nno crossover up to N = 1024")


if __name__ == "__main__":
    main()
