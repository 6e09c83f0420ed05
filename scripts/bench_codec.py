"""Time the AdaComp codec against one np.add pass over the same array, side by side.

    python scripts/bench_codec.py --sizes 1000000,10000000 --bin-sizes 500,50

For every (size, L_T): one fc tensor spec and a ``CodecState``, a stream of
heavy-tailed (Student-t) gradients, a few warm-up steps so the residue is in
steady state, then ``--repeats`` timed rounds. Each round times, in turn,
``np.add(a, b)`` (allocating), ``np.add(a, b, out=c)``, ``encode`` of the next
gradient, ``decode`` (allocating), ``accumulate`` into a reused buffer, and
``mean_into`` of that payload and ``--ranks`` - 1 more (steady-state payloads
of other simulated ranks, made before timing): the exchange's receive path,
reported per payload. The table keeps the minimum over rounds and ratios to
np.add measured in the same run, so a noisy shared machine mostly cancels out.

Density is sent elements / elements over rank 0's timed steps; bits per sent
element counts the index and sign streams only; compression is dense float32
bytes / payload bytes, headers included (as in docs/CODEC.md).
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
from adacomp_mpi.codec.api import mean_into
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
    ranks: int
    mean: float  # mean_into of ``ranks`` payloads, all of it


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


def gradient_streams(
    rng: np.random.Generator, numel: int, dof: float, ranks: int
) -> list[list[np.ndarray]]:
    """Per rank, the gradients it cycles through: rank 0 gets the three drawn
    arrays in order, rank r starts r steps later and odd ranks are negated."""
    base = [(rng.standard_t(dof, numel) * 1e-3).astype(np.float32) for _ in range(3)]
    flipped = [-g for g in base] if ranks > 1 else base
    return [
        [(flipped if rank % 2 else base)[(k + rank) % 3] for k in range(3)] for rank in range(ranks)
    ]


def warm_payloads(
    specs: list[TensorSpec], streams: list[list[np.ndarray]], *, warmup: int, coding: str
) -> list[np.ndarray]:
    """One steady-state payload from each of ranks 1.., made before timing starts
    so the timed rounds touch no more memory than rank 0's own steps."""
    payloads = []
    for stream in streams:
        state = make_state(specs, CodecConfig(index_coding=coding))
        for step in range(warmup + 1):
            payload = encode({"w": stream[step % 3]}, state)
        payloads.append(payload)
    return payloads


def run_case(
    numel: int,
    bin_size: int,
    *,
    repeats: int,
    warmup: int,
    dof: float,
    coding: str,
    seed: int,
    ranks: int,
    profile: bool = False,
) -> Row:
    rng = np.random.default_rng(seed)
    specs = [TensorSpec("w", numel, kind="fc", bin_size=bin_size)]
    state = make_state(specs, CodecConfig(index_coding=coding))
    streams = gradient_streams(rng, numel, dof, ranks)
    grads = streams[0]
    others = warm_payloads(specs, streams[1:], warmup=warmup, coding=coding)
    a, b = grads[0].copy(), grads[1].copy()
    c = np.empty_like(a)
    out = {"w": np.zeros(numel, np.float32)}
    for step in range(warmup):
        encode({"w": grads[step % len(grads)]}, state)

    times: dict[str, list[float]] = {k: [] for k in ("add", "add_out", "enc", "dec", "acc", "mean")}
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
        t, _ = timed(lambda payload=payload: mean_into([payload, *others], specs, out))
        times["mean"].append(t)
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
        ranks=ranks,
        mean=best(times["mean"]),
    )


HEADER = (
    "| elements | L_T | density | bits/sent | compression | np.add ms | np.add out= ms "
    "| encode ms | decode ms | accumulate ms | mean of N ms | encode/add | encode/add out= "
    "| decode/add | accumulate/add | mean/add per payload |"
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
        f"{ms * row.mean:.2f} (N={row.ranks})",
        f"{row.encode / row.add:.2f}",
        f"{row.encode / row.add_out:.2f}",
        f"{row.decode / row.add:.2f}",
        f"{row.accumulate / row.add:.2f}",
        f"{row.mean / row.ranks / row.add:.2f}",
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
    "--ranks", default=4, show_default=True, help="Payloads averaged by mean_into (N ranks)."
)
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
    ranks: int,
    clock_name: str,
    profile: bool,
) -> None:
    """Print a markdown table of codec times and their ratios to one np.add pass."""
    global clock
    clock = CLOCKS[clock_name]
    click.echo(
        f"# numpy {np.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}; {clock_name} clock, repeats {repeats}, warm-up {warmup}, "
        f"Student-t dof {dof}, coding {coding}, ranks {ranks}"
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
                ranks=ranks,
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
