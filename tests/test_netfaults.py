"""Network faults between two "hosts": a cut link, and a lossy one.

Two network namespaces joined by a veth throttled to 1 gbit
(tests/netns_helpers.py, scripts/netns/twohost.sh), one rank on each, the MPI
data path forced onto TCP, so every byte between the ranks crosses the link
that the test breaks:

* cut (``ip link set vnet0 down``): the peer is unreachable and TCP never
  says so; the stall watchdog (``--stall-timeout``) must end every rank, and
  ``--resume auto`` must continue from the last periodic checkpoint;
* 2 % packet loss both ways (nftables): TCP retransmits, so the run must
  finish bit-identical to the same run on a clean link.

Needs root, iproute2, unshare (and nft for the loss test); skips otherwise.
Every wait has a deadline; the hosts are torn down whatever happens.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import Job, parse_rank_pids, pid_alive, step_records
from mpi_util import train_command
from netns_helpers import TwoHosts, nft_skip_reason, two_hosts

from adacomp_mpi.dist.watchdog import EXIT_STALLED

pytestmark = [pytest.mark.mpi, pytest.mark.fault]

RATE = "1gbit"
STARTUP_S = 120.0  # two torch imports on two busy cores, through hydra
RUN_TIMEOUT_S = 120
STALL_TIMEOUT_S = 10
CUT_DEADLINE_S = 30.0  # from the cut to every rank and mpiexec being gone
STEPS_BEFORE_CUT = 25
LOSS_PERCENT = 2
LOSS_EPOCHS = "2"  # about 90 steps: enough packets that each side drops some
POLL_S = 0.05


def _watchdog_line(rank: int) -> re.Pattern[str]:
    return re.compile(
        rf"^\[{rank}/2\] rank {rank}: no progress for {STALL_TIMEOUT_S} s in [a-z ]+ "
        r"at step \d+: a peer is unreachable or dead; aborting the job "
        r"\(resume with --resume auto\)$",
        re.M,
    )


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    with two_hosts(RATE) as built:
        yield built


def _train_args(out: Path, *extra: str) -> list[str]:
    return [*train_command(), "--output-dir", str(out), *extra]


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def _output(result: Any) -> str:
    return f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _wait_for_exit(job: Job, rank_pids: dict[int, int], since: float) -> dict[str, float]:
    """Seconds from ``since`` until mpiexec and each rank were seen gone (missing: still up)."""
    gone: dict[str, float] = {}
    watched = {"mpiexec": job.pid, **{f"rank{r}": pid for r, pid in rank_pids.items()}}
    while time.monotonic() - since < CUT_DEADLINE_S and len(gone) < len(watched):
        job.note_tree()
        job.process.poll()
        for name, pid in watched.items():
            ended = job.process.returncode is not None if name == "mpiexec" else not pid_alive(pid)
            if name not in gone and ended:
                gone[name] = round(time.monotonic() - since, 2)
        time.sleep(POLL_S)
    return gone


def _rank_logs(base: Path, args: list[str]) -> list[str]:
    """Run ``args`` with each rank's stdout and stderr going straight to BASE.RANK.log.

    Hydra forwards rank output through its proxies to mpiexec: a cut-off
    host's output never arrives, and on MPI_Abort the proxies can be torn
    down before they pass on the last lines (the watchdog's). A local file
    loses nothing; ``exec`` keeps the rank's PID.
    """
    return ["sh", "-c", 'exec "$@" >"$0.$PMI_RANK.log" 2>&1', str(base), *args]


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.timeout(300)
def test_a_cut_link_ends_every_rank_and_resume_auto_finishes(
    hosts: TwoHosts, tmp_path: Path, record_property: Any
) -> None:
    out = tmp_path / "run"
    args = ["--checkpoint-every", "20", "--stall-timeout", str(STALL_TIMEOUT_S)]
    logs = [tmp_path / f"cut.{rank}.log" for rank in range(2)]
    command = _rank_logs(tmp_path / "cut", _train_args(out, "--epochs", "200", *args))
    job = hosts.start(command, cwd=tmp_path, name="cut")

    def output() -> str:
        ranks = "".join(f"--- rank {r}\n{_read(log)}\n" for r, log in enumerate(logs))
        return f"{job.output()}\n{ranks}"

    try:
        rank_pids = job.wait_until(
            lambda: parse_rank_pids(_read(logs[0])), timeout=STARTUP_S, what="'ranks:' line"
        )
        assert sorted(rank_pids) == [0, 1], output()
        job.wait_until(
            lambda: len(step_records(out / "metrics.jsonl")) >= STEPS_BEFORE_CUT,
            timeout=STARTUP_S,
            what=f"{STEPS_BEFORE_CUT} steps",
        )
        hosts.set_link(hosts.namespaces[1], up=False)
        cut = time.monotonic()
        record_property("steps_at_cut", len(step_records(out / "metrics.jsonl")))
        gone = _wait_for_exit(job, rank_pids, cut)
        for name, seconds in gone.items():
            record_property(f"cut_to_{name}_gone_s", seconds)
        record_property("mpiexec_exit_code", job.process.returncode)
        still_running = sorted({"mpiexec", *(f"rank{r}" for r in rank_pids)} - set(gone))
        record_property("still_running_30s_after_cut", ",".join(still_running) or "none")
    finally:
        job.kill_all()
        hosts.kill_processes()  # hydra's proxy on the cut-off host cannot hear mpiexec end
    assert not still_running, (
        f"{still_running} still running {CUT_DEADLINE_S:.0f} s after the cut\n{output()}"
    )
    # Hydra passes on rank 0's MPI_Abort code (rank 0 shares the host with mpiexec).
    assert job.process.returncode != 0, output()
    assert job.process.returncode == EXIT_STALLED, output()
    # Each rank's own watchdog saw the stall, on both sides of the cut.
    for rank, log in enumerate(logs):
        assert _watchdog_line(rank).search(_read(log)), (
            f"no watchdog line from rank {rank}\n{output()}"
        )

    # The link comes back: resume from the newest periodic checkpoint, finish soon.
    hosts.set_link(hosts.namespaces[1], up=True)
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    step = json.loads((newest / "manifest.json").read_text())["step"]
    epoch = next(r["epoch"] for r in step_records(out / "metrics.jsonl") if r["step"] == step)
    epochs = max(2, epoch + 2)  # past the checkpoint's epoch, whatever step it holds
    started = time.monotonic()
    result = hosts.run_mpiexec(
        _train_args(out, "--epochs", str(epochs), *args, "--resume", "auto"),
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
    )
    record_property("resume_run_s", round(time.monotonic() - started, 1))
    record_property("resumed_step", step)
    assert result.returncode == 0, _output(result)
    assert f"resumed from {newest} at step {step}" in result.stdout, _output(result)
    summary = _summary(out)
    assert summary["params_identical"] is True
    assert summary["world_size"] == 2
    assert summary["steps"] > step


@pytest.mark.timeout(300)
def test_two_percent_packet_loss_finishes_bit_identical(
    hosts: TwoHosts, tmp_path: Path, record_property: Any
) -> None:
    if reason := nft_skip_reason():
        pytest.skip(reason)
    clean_out, lossy_out = tmp_path / "clean", tmp_path / "lossy"
    started = time.monotonic()
    clean = hosts.run_mpiexec(
        _train_args(clean_out, "--epochs", LOSS_EPOCHS), timeout=RUN_TIMEOUT_S, cwd=tmp_path
    )
    record_property("clean_run_s", round(time.monotonic() - started, 1))
    assert clean.returncode == 0, _output(clean)

    for ns in hosts.namespaces:
        hosts.add_packet_loss(ns, LOSS_PERCENT)
    try:
        started = time.monotonic()
        lossy = hosts.run_mpiexec(
            _train_args(lossy_out, "--epochs", LOSS_EPOCHS), timeout=RUN_TIMEOUT_S, cwd=tmp_path
        )
        record_property("lossy_run_s", round(time.monotonic() - started, 1))
        dropped = {ns: hosts.dropped_packets(ns) for ns in hosts.namespaces}
    finally:
        for ns in hosts.namespaces:
            hosts.remove_packet_loss(ns)
    for i, ns in enumerate(hosts.namespaces, start=1):
        record_property(f"dropped_packets_host{i}", dropped[ns])
    assert lossy.returncode == 0, _output(lossy)
    assert all(count > 0 for count in dropped.values()), dropped

    reference, got = _summary(clean_out), _summary(lossy_out)
    assert got["params_identical"] is True
    assert reference["params_identical"] is True
    assert got["steps"] == reference["steps"] > 0
    assert got["param_digest"] == reference["param_digest"]
