"""Time the AdaComp codec against one np.add pass over the same array, side by side.

    python scripts/bench_codec.py --sizes 1000000,10000000 --bin-sizes 500,50

For every (size, L_T): one fc tensor spec and a ``CodecState``, a stream of
heavy-tailed (Student-t) gradients, a few warm-up steps so the residue is in
steady state, then ``--repeats`` timed rounds. Each round times, in turn,
``np.add(a, b)`` (allocating), ``np.add(a, b, out=c)``, ``encode`` of the next
gradient, ``decode`` (allocating) and ``accumulate`` into a reused buffer (the
exchange's path). The table reports the minimum over rounds and ratios to
np.add measured in the same run, so a noisy shared machine mostly cancels out.

Density is sent elements / elements over the timed steps; bits per sent element
counts the index and sign streams only; compression is dense float32 bytes /
payload bytes, headers included (as in DESIGN.md).
"""

from __future__ import annotations

import cProfile
import platform
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import click
import numpy as np

from adacomp_mpi import CodecConfig, TensorSpec, accumulate, decode, encode, make_state
from adacomp_mpi.codec.wire import parse_payload


@dataclass(frozen=True)
class Row:
    """One benchmark line: sizes, what was sent, and the best time of each operation."""

    numel: int
    bin_size: int
    density: float
    bits_per_sent: float
    compression: float
    add: float
    add_out: float
    encode: float
    decode: float
    accumulate: float


def best(times: list[float]) -> float:
    return min(times)


# "cpu" counts this process's CPU time (user + system, page faults included),
# so time spent preempted by other jobs on a shared machine is left out.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = clock()
    result = fn()
    return clock() - start, result


def run_case(
    numel: int,
    bin_size: int,
    *,
    repeats: int,
    warmup: int,
    dof: float,
    coding: str,
    seed: int,
    profile: bool = False,
) -> Row:
    rng = np.random.default_rng(seed)
    specs = [TensorSpec("w", numel, kind="fc", bin_size=bin_size)]
    state = make_state(specs, CodecConfig(index_coding=coding))
    grads = [(rng.standard_t(dof, numel) * 1e-3).astype(np.float32) for _ in range(3)]
    a, b = grads[0].copy(), grads[1].copy()
    c = np.empty_like(a)
    out = {"w": np.zeros(numel, np.float32)}
    for step in range(warmup):
        encode({"w": grads[step % len(grads)]}, state)

    times: dict[str, list[float]] = {k: [] for k in ("add", "add_out", "enc", "dec", "acc")}
    sent = coded_bytes = payload_bytes = 0
    for step in range(repeats):
        grad = grads[(warmup + step) % len(grads)]
        t, _ = timed(lambda: np.add(a, b))
        times["add"].append(t)
        t, _ = timed(lambda: np.add(a, b, out=c))
        times["add_out"].append(t)
        t, payload = timed(lambda grad=grad: encode({"w": grad}, state))
        times["enc"].append(t)
        t, _ = timed(lambda payload=payload: decode(payload, specs))
        times["dec"].append(t)
        out["w"].fill(0)
        t, _ = timed(lambda payload=payload: accumulate(payload, specs, out))
        times["acc"].append(t)
        (record,) = parse_payload(payload, specs)
        sent += record.sent
        coded_bytes += record.coded.data.size
        payload_bytes += payload.size
    if profile:
        profiler = cProfile.Profile()
        for step in range(repeats):
            grad = grads[step % len(grads)]
            profiler.runcall(encode, {"w": grad}, state)
        click.echo(f"\n# cProfile of {repeats} encode steps, {numel:,} elements, L_T={bin_size}")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(12)
    return Row(
        numel=numel,
        bin_size=bin_size,
        density=sent / (numel * repeats),
        bits_per_sent=8 * coded_bytes / max(sent, 1),
        compression=4 * numel * repeats / payload_bytes,
        add=best(times["add"]),
        add_out=best(times["add_out"]),
        encode=best(times["enc"]),
        decode=best(times["dec"]),
        accumulate=best(times["acc"]),
    )


HEADER = (
    "| elements | L_T | density | bits/sent | compression | np.add ms | np.add out= ms "
    "| encode ms | decode ms | accumulate ms | encode/add | encode/add out= "
    "| decode/add | decode/add out= |"
)


def format_row(row: Row) -> str:
    ms = 1e3
    cells = [
        f"{row.numel:,}",
        f"{row.bin_size}",
        f"{100 * row.density:.2f}%",
        f"{row.bits_per_sent:.2f}",
        f"{row.compression:.0f}x",
        f"{ms * row.add:.2f}",
        f"{ms * row.add_out:.2f}",
        f"{ms * row.encode:.2f}",
        f"{ms * row.decode:.2f}",
        f"{ms * row.accumulate:.2f}",
        f"{row.encode / row.add:.2f}",
        f"{row.encode / row.add_out:.2f}",
        f"{row.decode / row.add:.2f}",
        f"{row.decode / row.add_out:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def int_list(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


@click.command()
@click.option("--sizes", default="1000000,10000000", show_default=True, help="Element counts.")
@click.option("--bin-sizes", default="500,50", show_default=True, help="L_T values.")
@click.option("--repeats", default=7, show_default=True, help="Timed rounds (min is kept).")
@click.option("--warmup", default=6, show_default=True, help="Untimed steps before timing.")
@click.option("--dof", default=3.0, show_default=True, help="Student-t degrees of freedom.")
@click.option(
    "--coding",
    type=click.Choice(["auto", "fixed", "rice"]),
    default="auto",
    show_default=True,
    help="Index coding.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--clock",
    "clock_name",
    type=click.Choice(sorted(CLOCKS)),
    default="cpu",
    show_default=True,
    help="cpu: process CPU time (robust on a shared machine); wall: perf_counter.",
)
@click.option("--profile", is_flag=True, help="Also cProfile the encode steps of every case.")
def main(
    sizes: str,
    bin_sizes: str,
    repeats: int,
    warmup: int,
    dof: float,
    coding: str,
    seed: int,
    clock_name: str,
    profile: bool,
) -> None:
    """Print a markdown table of codec times and their ratios to one np.add pass."""
    global clock
    clock = CLOCKS[clock_name]
    click.echo(
        f"# numpy {np.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}; {clock_name} clock, repeats {repeats}, warm-up {warmup}, "
        f"Student-t dof {dof}, coding {coding}"
    )
    click.echo(HEADER)
    click.echo("|" + "---|" * HEADER.count(" | ") + "---|")
    rows: list[Row] = []
    for numel in int_list(sizes):
        for bin_size in int_list(bin_sizes):
            row = run_case(
                numel,
                bin_size,
                repeats=repeats,
                warmup=warmup,
                dof=dof,
                coding=coding,
                seed=seed,
                profile=profile,
            )
            rows.append(row)
            if not profile:
                click.echo(format_row(row))
    if profile:  # the table again, after the profiles
        click.echo(HEADER)
        click.echo("|" + "---|" * HEADER.count(" | ") + "---|")
        for row in rows:
            click.echo(format_row(row))


if __name__ == "__main__":
    main()
