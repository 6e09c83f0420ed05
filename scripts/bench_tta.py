"""Time to accuracy over a throttled link: AdaComp against dense MPI and torch DDP.

Every cell is one workload on two network-namespace hosts (scripts/netns/twohost.sh,
root needed) joined by a veth shaped with tc tbf to one rate, with 2 ranks (1 per host)
or 4 (2 per host: oversubscribed on a 2-core machine). In a cell every system trains the
same model on the same data in the same order with the same batch, learning rate, seed
and step budget, evaluating on the test split every ``eval_every`` steps:

  dense         adacomp-train --compression none (MPI Allreduce, fp32)
  adacomp       adacomp-train (AdaComp, default settings)
  adacomp-best  adacomp-train with BEST_OPTIONS (the best documented settings)
  ddp-fp32      scripts/ddp_peer.py --mode fp32 (PyTorch DDP over gloo)
  ddp-fp16      scripts/ddp_peer.py --mode fp16 (DDP's fp16 compression hook)
  ddp-psgd-r1   scripts/ddp_peer.py --mode powersgd --powersgd-rank 1
  ddp-psgd-r4   scripts/ddp_peer.py --mode powersgd --powersgd-rank 4
  scalecom      adacomp-train --compression scalecom (only where the trainer has it)

Each cell's results (quality against training seconds, bytes that crossed the veth,
seconds per step, the commands) are saved as OUT/<cell>.json as each system finishes;
docs/TTA.md and its figures are then rebuilt from every saved cell, so ``--only`` reruns
some cells and keeps the others. The clock is the training clock of both programs:
from the start of training (after start-up) with evaluation time left out.

    sudo .venv/bin/python scripts/bench_tta.py                    # the whole plan
    sudo .venv/bin/python scripts/bench_tta.py --only 'mlp-*-n2'  # some cells
    sudo .venv/bin/python scripts/bench_tta.py --quick --out /tmp/tta   # a few minutes
    .venv/bin/python scripts/bench_tta.py --report-only           # rebuild the doc
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tta_doc import write_doc
from twohost import TWOHOST, twohost

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent
PEER = REPO / "scripts" / "ddp_peer.py"
LINK_ADDR = ("10.10.0.1", "10.10.0.2")
RATES = ("100mbit", "1gbit", "10gbit")
FOUR_RANK_RATE = "1gbit"
# The best AdaComp settings measured for these workloads (docs/TTA.md, "Choosing
# adacomp-best"): L_T = 100 for every kind but conv (which keeps its 50) beat the
# defaults on the FC model and the char-LSTM (docs/CODEC.md, momentum
# compensation). A --bin-size kind the model lacks changes nothing. An option the
# trainer does not have is dropped at run time; the JSON records the flags each run got.
BEST_OPTIONS = tuple(
    word
    for kind in ("fc", "recurrent", "embedding", "other")
    for word in ("--bin-size", f"{kind}=100")
)
SHAKESPEARE_CAP = "1000000"  # as scripts/reproduce.py: the first 1 MB of the corpus
PORTS = itertools.count(29600)  # a fresh gloo rendezvous port per peer run


@dataclass(frozen=True)
class System:
    """How one system is launched: the trainer or the DDP peer, with its flags."""

    program: str  # "trainer" or "peer"
    flags: tuple[str, ...]
    requires: str = ""  # a word that must be in adacomp-train --help


SYSTEMS: dict[str, System] = {
    "dense": System("trainer", ("--compression", "none")),
    "adacomp": System("trainer", ("--compression", "adacomp")),
    "adacomp-best": System("trainer", ("--compression", "adacomp", *BEST_OPTIONS)),
    "ddp-fp32": System("peer", ("--mode", "fp32")),
    "ddp-fp16": System("peer", ("--mode", "fp16")),
    "ddp-psgd-r1": System("peer", ("--mode", "powersgd", "--powersgd-rank", "1")),
    "ddp-psgd-r4": System("peer", ("--mode", "powersgd", "--powersgd-rank", "4")),
    "scalecom": System("trainer", ("--compression", "scalecom"), requires="scalecom"),
}


@dataclass(frozen=True)
class Workload:
    """A model, its data and the one set of hyper-parameters every system uses."""

    model: str
    dataset: str
    steps: int
    eval_every: int
    options: tuple[str, ...] = ()  # --model-option KEY=VALUE
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 16
    lr_schedule: str = "cosine"  # to 0 at the last step: a settled final quality to aim at
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = 1500.0  # seconds per run

    @property
    def metric(self) -> str:
        return "test_perplexity" if self.dataset == "shakespeare" else "test_accuracy"


LM_ENV = (("ADACOMP_SHAKESPEARE_MAX_BYTES", SHAKESPEARE_CAP),)
WORKLOADS: dict[str, Workload] = {
    # FC-heavy: 784-2048-256-10, 2.14 M parameters
    "mlp": Workload("mlp", "fashion_mnist", 600, 25, options=("hidden=2048,256",)),
    # The CNN's evaluation (10,000 test images) costs several times its training
    # steps here, so it is evaluated every 50 steps, not 25.
    "cnn": Workload("cnn", "fashion_mnist", 300, 50),
    "lstm": Workload("char_lstm", "shakespeare", 300, 25, lr=0.5, env=LM_ENV),
    # About 80 ms of compute a step on these cores: 200 steps keep its cells short.
    "transformer": Workload("transformer", "shakespeare", 200, 25, lr=0.05, env=LM_ENV),
}
# Step budgets that differ from the workload's, by cell name. At 100 Mbit/s the
# FC model's dense-sized systems take 0.8 s a step: 300 steps keep that cell at
# about 11 minutes (dense's target is then its quality after 300 steps).
CELL_STEPS = {"mlp-100mbit-n2": 300}
# 4 ranks (2 per host, oversubscribed on 2 cores) at 1 Gbit/s, for the workloads
# whose cells are short enough that the whole plan stays under an hour.
FOUR_RANK_WORKLOADS = ("mlp", "cnn", "lstm")
QUICK = {"mlp": Workload("mlp", "fashion_mnist", 40, 10, options=("hidden=2048,256",))}
QUICK_SYSTEMS = ("dense", "adacomp", "ddp-fp32")


@dataclass(frozen=True)
class Cell:
    workload: str
    rate: str
    ranks: int
    quick: bool = False

    @property
    def job(self) -> Workload:
        workload = (QUICK if self.quick else WORKLOADS)[self.workload]
        steps = CELL_STEPS.get(self.name)
        return workload if self.quick or steps is None else replace(workload, steps=steps)

    @property
    def name(self) -> str:
        return f"{self.workload}-{self.rate}-n{self.ranks}"


def plan(*, quick: bool) -> list[Cell]:
    if quick:
        return [Cell("mlp", "1gbit", 2, quick=True)]
    cells = [Cell(w, r, 2) for w in WORKLOADS for r in RATES]
    return cells + [Cell(w, FOUR_RANK_RATE, 4) for w in FOUR_RANK_WORKLOADS]


def trainer_help() -> str:
    done = subprocess.run(
        [str(VENV / "adacomp-train"), "train", "--help"], capture_output=True, text=True, timeout=60
    )
    return done.stdout


def available_flags(flags: tuple[str, ...], help_text: str) -> tuple[str, ...]:
    """``flags`` less the options the trainer does not know (a flag not in its help)."""
    return tuple(f for f in flags if not f.startswith("--") or f in help_text)


def job_flags(workload: Workload, data_dir: Path) -> list[str]:
    """The flags every system of a cell shares."""
    flags = ["--dataset", workload.dataset, "--model", workload.model]
    for option in workload.options:
        flags += ["--model-option", option]
    flags += ["--batch-size", str(workload.batch_size), "--lr", str(workload.lr)]
    flags += ["--optimizer", workload.optimizer, "--momentum", str(workload.momentum)]
    flags += ["--lr-schedule", workload.lr_schedule]
    flags += ["--seed", "0", "--eval-every", str(workload.eval_every)]
    if (data_dir / workload.dataset).is_dir():
        flags += ["--data-path", str(data_dir / workload.dataset)]
    return flags


def system_command(
    name: str, flags: tuple[str, ...], workload: Workload, job: list[str], out: Path, port: int
) -> list[str]:
    """The mpiexec arguments after the host placement, for one system."""
    budget = ["--epochs", "1000", "--max-steps", str(workload.steps)]
    env = [w for k, v in (("OMP_NUM_THREADS", "1"), *workload.env) for w in ("-genv", k, v)]
    if SYSTEMS[name].program == "trainer":
        trainer = [str(VENV / "adacomp-train"), *job, *budget, *flags]
        return [*env, *trainer, "--quiet", "--output-dir", str(out)]
    env += ["-genv", "MASTER_ADDR", LINK_ADDR[0], "-genv", "MASTER_PORT", str(port)]
    env += ["-genv", "GLOO_SOCKET_IFNAME", "vnet0"]
    return [*env, str(VENV / "python"), str(PEER), *job, *budget, *flags, "--output-dir", str(out)]


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def curve(out: Path, workload: Workload) -> list[dict[str, float]]:
    """[{step, seconds, quality}] from a run's metrics.jsonl, in step order."""
    by_step: dict[int, dict[str, float]] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("type") not in ("eval", "epoch") or workload.metric not in record:
            continue
        seconds = record.get("train_seconds", record["wall_seconds"])
        by_step[record["step"]] = {
            "step": record["step"],
            "seconds": seconds,
            "quality": record[workload.metric],
        }
    return [by_step[step] for step in sorted(by_step)]


def run_system(
    prefix: str, cell: Cell, name: str, flags: tuple[str, ...], job: list[str], work: Path
) -> dict[str, Any]:
    """One system in one cell: its curve, bytes over the link, times, or its failure."""
    workload = cell.job
    out = (work / cell.name / name).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = system_command(name, flags, workload, job, out, next(PORTS))
    placement = ["-ppn", str(cell.ranks // 2), "-n", str(cell.ranks)]
    full = ["bash", str(TWOHOST), "mpiexec", prefix, *placement, *command]
    load_before, before = load_average(), int(twohost("bytes", prefix))
    started = time.monotonic()
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=workload.timeout)
        (out / "run.log").write_text(done.stdout + done.stderr)
        failure = f"exit {done.returncode}: {first_error(done.stderr)}" if done.returncode else ""
    except subprocess.TimeoutExpired:
        failure = f"timed out after {workload.timeout:.0f} s"
    wall = time.monotonic() - started
    result: dict[str, Any] = {
        "system": name,
        "command": shown_command(
            ["scripts/netns/twohost.sh", "mpiexec", "PREFIX", *placement, *command]
        ),
        "link_bytes": int(twohost("bytes", prefix)) - before,
        "wall_seconds": wall,
        "load_before": load_before,
        "load_after": load_average(),
    }
    if failure:
        return {**result, "failed": failure}
    summary = json.loads((out / "summary.json").read_text())
    points = curve(out, workload)
    train_seconds = points[-1]["seconds"] if points else math.nan
    return {
        **result,
        "steps": summary["steps"],
        "parameters": summary.get("parameters"),
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / summary["steps"],
        "final_quality": points[-1]["quality"],
        "compression_ratio": summary.get("compression_ratio"),
        "time_breakdown": summary.get("time_breakdown"),  # the trainer's phases, seconds
        "params_identical": summary.get("params_identical"),
        "curve": points,
    }


def first_error(stderr: str) -> str:
    """The first line that says what went wrong (not mpiexec's clean-up chatter)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    useful = [line for line in lines if "error" in line.lower() and "mpiexec@" not in line]
    return (useful or lines or ["no output"])[0][:300]


def shown_command(words: list[str]) -> str:
    """One shell line with repository paths relative to the repository root."""
    shown = []
    for word in words:
        path = Path(word)
        if path.is_absolute() and path.is_relative_to(REPO):
            word = str(path.relative_to(REPO))
        shown.append(word)
    return shlex.join(shown)


LINK_SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(30); got = 0; began = None
while chunk := c.recv(1 << 20):
    began = began or time.perf_counter(); got += len(chunk)
print(8 * got / (time.perf_counter() - began) / 1e9)
"""
LINK_CLIENT = """
import socket, sys, time
for _ in range(100):
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); break
    except OSError:
        time.sleep(0.1)
block = bytes(1 << 20); end = time.perf_counter() + float(sys.argv[3])
while time.perf_counter() < end:
    c.sendall(block)
c.close()
"""


def link_ceiling(prefix: str, *, seconds: float = 3.0) -> float:
    """Gbit/s that one TCP stream reaches from host 1 to host 2 (what tbf and the CPU allow)."""
    port = "29599"
    ns = [f"{prefix}1", f"{prefix}2"]
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns[1], sys.executable, "-c", LINK_SERVER, LINK_ADDR[1], port],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        subprocess.run(
            ["ip", "netns", "exec", ns[0], sys.executable, "-c", LINK_CLIENT, LINK_ADDR[1],
             port, str(seconds)],
            timeout=seconds + 40, check=True,
        )  # fmt: skip
        output, _ = server.communicate(timeout=40)
        return float(output.strip())
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def cell_path(out: Path, cell: Cell) -> Path:
    return out / f"{cell.name}.json"


def run_cell(cell: Cell, systems: list[str], *, out: Path, work: Path, data_dir: Path) -> None:
    """Set up the two hosts at the cell's rate, run each system, save after each one."""
    workload = cell.job
    path = cell_path(out, cell)
    saved = json.loads(path.read_text()) if path.exists() else {}
    help_text = trainer_help()
    prefix = "tta" + uuid.uuid4().hex[:8]
    twohost("up", prefix, cell.rate)
    try:
        ceiling = link_ceiling(prefix)
        record = {
            "cell": cell.name,
            "workload": cell.workload,
            "model": workload.model,
            "model_options": list(workload.options),
            "dataset": workload.dataset,
            "metric": workload.metric,
            "steps": workload.steps,
            "eval_every": workload.eval_every,
            "batch_size": workload.batch_size,
            "optimizer": workload.optimizer,
            "lr": workload.lr,
            "lr_schedule": workload.lr_schedule,
            "env": dict(workload.env),
            "rate": cell.rate,
            "ranks": cell.ranks,
            "ranks_per_host": cell.ranks // 2,
            "link_gbit_s": ceiling,
            "hosts": prefix,  # the namespaces' prefix (removed after the cell)
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "systems": saved.get("systems", {}),
        }
        job = job_flags(workload, data_dir)
        for name in systems:
            system = SYSTEMS[name]
            if system.requires and system.requires not in help_text:
                continue
            flags = system.flags
            if system.program == "trainer":
                flags = available_flags(flags, help_text)
            if name == "adacomp-best" and flags == SYSTEMS["adacomp"].flags:
                click.echo(f"{cell.name} {name}: skipped (no option beyond the defaults)", err=True)
                continue
            click.echo(f"{cell.name} {name} ...", err=True)
            result = run_system(prefix, cell, name, flags, job, work)
            result["flags"] = list(flags)
            record["systems"][name] = result
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1) + "\n")
            state = result.get("failed") or (
                f"{result['final_quality']:.4f} in {result['train_seconds']:.1f} s, "
                f"{result['link_bytes'] / 1e6:.1f} MB over the link"
            )
            click.echo(f"{cell.name} {name}: {state}", err=True)
    finally:
        twohost("down", prefix)


def machine() -> str:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    python = platform.python_version()
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {python}"


def backfill(out: Path, work: Path) -> None:
    """Add the trainer's time_breakdown to saved results that lack it (cells saved
    before it was recorded), from their run directories when those are still here."""
    for path in sorted(Path(out).glob("*.json")):
        cell = json.loads(path.read_text())
        changed = False
        for name, result in cell["systems"].items():
            summary = work / cell["cell"] / name / "summary.json"
            if "time_breakdown" not in result and "curve" in result and summary.exists():
                result["time_breakdown"] = json.loads(summary.read_text()).get("time_breakdown")
                changed = True
        if changed:
            path.write_text(json.dumps(cell, indent=1) + "\n")


def _stop_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_cell's finally: namespaces go


@click.command()
@click.option("--only", multiple=True, help="Cells to run: a glob on names like mlp-1gbit-n2.")
@click.option(
    "--systems",
    default=None,
    help=f"Comma-separated, of {list(SYSTEMS)} [all; --quick: {','.join(QUICK_SYSTEMS)}].",
)
@click.option("--quick", is_flag=True, help="One small cell (mlp, 1gbit, 2 ranks, 40 steps).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the cell JSON goes [docs/tta; --quick: runs/tta-quick].")  # fmt: skip
@click.option("--doc", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The Markdown to write [docs/TTA.md; --quick: OUT/TTA.md].")  # fmt: skip
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs/tta"), help="Run directories of each system.")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path), default=REPO / "data")
@click.option("--report-only", is_flag=True, help="Rebuild the doc from saved JSON; run nothing.")
@click.option("--dry-run", is_flag=True, help="Print the cells that would run.")
def main(
    only: tuple[str, ...], systems: str | None, quick: bool, out: Path | None, doc: Path | None,
    work: Path, data_dir: Path, report_only: bool, dry_run: bool,
) -> None:  # fmt: skip
    """Run the time-to-accuracy plan (or part of it) and rebuild docs/TTA.md."""
    names = [
        s.strip() for s in (systems or ",".join(QUICK_SYSTEMS if quick else SYSTEMS)).split(",")
    ]
    names = [name for name in names if name]
    if unknown := sorted(set(names) - set(SYSTEMS)):
        raise click.BadParameter(f"unknown {unknown}; choose from {list(SYSTEMS)}")
    out = out or (Path("runs/tta-quick") if quick else REPO / "docs" / "tta")
    doc = doc or (out / "TTA.md" if quick else REPO / "docs" / "TTA.md")
    cells = [
        c for c in plan(quick=quick) if not only or any(fnmatch.fnmatch(c.name, p) for p in only)
    ]
    if only and not cells:
        raise click.BadParameter(f"no cell matches {list(only)}", param_hint="--only")
    if dry_run:
        click.echo("\n".join(c.name for c in cells))
        return
    if not report_only:
        if os.geteuid() != 0:
            raise click.ClickException("needs root (network namespaces); try sudo")
        signal.signal(signal.SIGTERM, _stop_on_term)
        for cell in cells:
            run_cell(cell, names, out=out, work=work, data_dir=data_dir)
    backfill(out, work)
    written = write_doc(out, doc=doc, quick=quick)
    click.echo("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main()
