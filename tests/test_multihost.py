"""adacomp-train across two "hosts": network namespaces joined by a veth pair.

scripts/netns/twohost.sh builds the hosts (each with its own hostname via
unshare --uts) and runs MPICH's mpiexec with scripts/netns/hydra_launcher.sh
as its remote shell, 2 ranks per host, with the MPI data path forced onto the
network (libfabric tcp), so every byte between the hosts crosses the veth and
shows in its counters. The same training runs once dense and once with AdaComp;
AdaComp must move far fewer bytes across the link.

Needs root, iproute2 and unshare; skips where namespaces cannot be created.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from cluster_helpers import (
    SCRIPTS,
    VENV,
    VENV_BIN,
    clean_env,
    is_root,
    kill_pid,
    missing_tools,
    run,
)

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]

TWOHOST = SCRIPTS / "netns" / "twohost.sh"
RUN_TIMEOUT_S = 100
EPOCHS = "2"


def _skip_reason() -> str | None:
    if not is_root():
        return "needs root to create network namespaces"
    missing = missing_tools(["ip", "unshare"])
    if missing:
        return f"missing {', '.join(missing)} (iproute2, util-linux)"
    if not (VENV_BIN / "adacomp-train").exists():
        return f"adacomp-train not installed in {VENV}"
    probe = f"acprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=20)
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return None


def _kill_namespace_processes(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=20)
    for pid in pids.stdout.split():
        if pid.isdigit():
            kill_pid(int(pid))


@pytest.fixture()
def two_hosts():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # Unique per run: names live in the machine-wide namespace list.
    prefix = f"ac{os.getpid() % 100000}{secrets.token_hex(2)}"
    env = clean_env(ADACOMP_VENV=str(VENV))
    try:
        run([str(TWOHOST), "up", prefix], env=env, timeout=30)
        yield prefix
    finally:
        for ns in (f"{prefix}1", f"{prefix}2"):
            _kill_namespace_processes(ns)
        run([str(TWOHOST), "down", prefix], env=env, timeout=30, check=False)


def _link_bytes(prefix: str) -> int:
    out = run([str(TWOHOST), "bytes", prefix], env=clean_env(), timeout=20)
    return int(out.stdout.strip())


def _train(prefix: str, tmp_path: Path, compression: str) -> tuple[dict, int]:
    out_dir = tmp_path / compression
    summary_path = out_dir / "summary.json"
    env = clean_env(
        ADACOMP_VENV=str(VENV),
        ADACOMP_EPOCHS=EPOCHS,  # via the environment, through hydra, to both hosts
        ADACOMP_OUTPUT_DIR=str(out_dir),
    )
    before = _link_bytes(prefix)
    cmd = [
        str(TWOHOST),
        "mpiexec",
        prefix,
        "-ppn",
        "2",
        "-n",
        "4",
        str(VENV_BIN / "adacomp-train"),
        "--compression",
        compression,
        "--summary",
        str(summary_path),
    ]
    run(cmd, env=env, timeout=RUN_TIMEOUT_S)
    crossed = _link_bytes(prefix) - before
    return json.loads(summary_path.read_text()), crossed


def test_adacomp_moves_fewer_bytes_across_hosts(two_hosts: str, tmp_path: Path, capsys):
    prefix = two_hosts
    dense, dense_link = _train(prefix, tmp_path, "none")
    ada, ada_link = _train(prefix, tmp_path, "adacomp")

    for s in (dense, ada):
        assert s["world_size"] == 4
        assert s["params_identical"] is True
        # Two hosts, two ranks each, each reporting its own namespace's hostname.
        assert sorted(s["hostnames"]) == sorted([f"{prefix}1"] * 2 + [f"{prefix}2"] * 2)
    assert dense["steps"] == ada["steps"] > 0
    assert dense["compression"] == "none"
    assert ada["compression"] == "adacomp"

    steps = dense["steps"]
    with capsys.disabled():
        print(
            f"\n[multihost] {steps} steps, 4 ranks on 2 hosts, bytes over the link: "
            f"dense (Allreduce) {dense_link:,} ({dense_link // steps:,}/step) vs "
            f"adacomp (Allgatherv) {ada_link:,} ({ada_link // steps:,}/step): "
            f"{dense_link / max(ada_link, 1):.1f}x less; trainer-reported compression "
            f"{ada['compression_ratio']:.1f}x; test accuracy dense "
            f"{dense['test_accuracy']:.3f}, adacomp {ada['test_accuracy']:.3f}"
        )

    # The data really went over the network. Lower bounds on what must cross
    # (counted both ways): dense averages with an Allreduce, and each host needs
    # the other host's summed gradient, so at least 2 x one rank's dense payload
    # per step = dense_bytes / 2 (dense_bytes sums all 4 ranks). AdaComp gathers
    # every payload, so each host must receive the other host's two payloads:
    # at least bytes_sent (summed over all ranks).
    assert dense_link >= dense["dense_bytes"] / 2, (dense_link, dense["dense_bytes"])
    assert ada_link >= ada["bytes_sent"], (ada_link, ada["bytes_sent"])
    assert ada_link * 5 < dense_link, (ada_link, dense_link)
