"""Two network-namespace "hosts" for tests, on top of scripts/netns/twohost.sh.

``two_hosts()`` builds PREFIX1 (10.10.0.1) and PREFIX2 (10.10.0.2) joined by a
veth (``vnet0`` in both), optionally throttled, and always tears them down,
killing whatever still runs inside first. ``TwoHosts`` runs mpiexec across
them (in the foreground with a deadline, or in the background as a
:class:`fault_helpers.Job`), cuts and restores the link, and adds nftables
packet loss. Every subprocess has a timeout; nothing is aimed anywhere but
the two private namespace addresses.

Needs root, iproute2 and unshare (and nft for packet loss); callers skip with
the reason :func:`netns_skip_reason` / :func:`nft_skip_reason` give.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster_helpers import (
    SCRIPTS,
    VENV,
    VENV_BIN,
    clean_env,
    find_tool,
    is_root,
    kill_pid,
    missing_tools,
    run,
)
from fault_helpers import Job, launch

TWOHOST = SCRIPTS / "netns" / "twohost.sh"
SHORT_TIMEOUT_S = 30  # ip/nft/tc commands
NFT_TABLE = "fault"
NFT_COUNTER = re.compile(r"counter packets (\d+) bytes (\d+)")


def netns_skip_reason() -> str | None:
    """Why two namespace hosts cannot be built here, or None."""
    if not is_root():
        return "needs root to create network namespaces"
    missing = missing_tools(["ip", "unshare", "tc"])
    if missing:
        return f"missing {', '.join(missing)} (iproute2, util-linux)"
    if not (VENV_BIN / "adacomp-train").exists():
        return f"adacomp-train not installed in {VENV}"
    probe = f"acprobe{os.getpid()}"
    made = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, timeout=SHORT_TIMEOUT_S
    )
    if made.returncode != 0:
        return f"cannot create network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=SHORT_TIMEOUT_S)
    return None


def nft_skip_reason() -> str | None:
    """Why nftables packet loss cannot be used here, or None (namespaces aside)."""
    if find_tool("nft") is None:
        return "nft not found: apt-get install nftables (scripts/ci/install_cluster_deps.sh)"
    return None


def unique_prefix() -> str:
    """At most 12 of [a-z0-9], unique per run: names live in the machine-wide netns list."""
    return f"ac{os.getpid() % 100000}{secrets.token_hex(2)}"


def kill_namespace_processes(ns: str) -> None:
    """SIGKILL every process whose network namespace is ``ns``."""
    pids = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=SHORT_TIMEOUT_S
    )
    for pid in pids.stdout.split():
        if pid.isdigit():
            kill_pid(int(pid))


@dataclass
class TwoHosts:
    """Namespaces ``PREFIX1`` and ``PREFIX2``, link ``vnet0`` between them."""

    prefix: str

    @property
    def namespaces(self) -> tuple[str, str]:
        return f"{self.prefix}1", f"{self.prefix}2"

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(ADACOMP_VENV=str(VENV), PYTHONUNBUFFERED="1", **extra)

    def mpiexec_command(self, args: list[str], *, ranks_per_host: int = 1) -> list[str]:
        """``twohost.sh mpiexec PREFIX -ppn K -n 2K args``: ranks on both hosts, over TCP."""
        ranks = 2 * ranks_per_host
        return [
            str(TWOHOST),
            "mpiexec",
            self.prefix,
            "-ppn",
            str(ranks_per_host),
            "-n",
            str(ranks),
            *args,
        ]

    def run_mpiexec(
        self, args: list[str], *, timeout: float, cwd: Path, ranks_per_host: int = 1
    ) -> subprocess.CompletedProcess[str]:
        """Run to the end (any exit code); the whole session is killed past ``timeout``."""
        return run(
            self.mpiexec_command(args, ranks_per_host=ranks_per_host),
            env=self.env(),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )

    def start(self, args: list[str], *, cwd: Path, name: str = "job") -> Job:
        """Start mpiexec across both hosts in the background; output to cwd/NAME.stdout|stderr."""
        return launch(self.mpiexec_command(args), cwd=cwd, name=name, env=self.env())

    def exec(self, ns: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip netns exec NS command...`` with a deadline."""
        return run(
            ["ip", "netns", "exec", ns, *command],
            env=clean_env(),
            timeout=SHORT_TIMEOUT_S,
            check=check,
        )

    def set_link(self, ns: str, *, up: bool) -> None:
        """Cut (``up=False``) or restore the link at ``ns``'s end of the veth."""
        self.exec(ns, "ip", "link", "set", "vnet0", "up" if up else "down")

    def add_packet_loss(self, ns: str, percent: int) -> None:
        """nftables: drop ``percent`` % of the packets ``ns`` receives on vnet0, counted."""
        table = ["inet", NFT_TABLE]
        made = self.exec(ns, "nft", "add", "table", *table, check=False)
        if made.returncode != 0:
            pytest.skip(f"nftables does not work here: {made.stderr.strip()}")
        self.exec(ns, "nft", "add", "chain", *table, "in", "{ type filter hook input priority 0; }")
        self.exec(
            ns, "nft", "add", "rule", *table, "in", "iifname", "vnet0",
            "numgen", "random", "mod", "100", "<", str(percent), "counter", "drop",
        )  # fmt: skip

    def dropped_packets(self, ns: str) -> int:
        """Packets the packet-loss rule in ``ns`` has dropped so far."""
        listing = self.exec(ns, "nft", "list", "table", "inet", NFT_TABLE).stdout
        counters = NFT_COUNTER.findall(listing)
        assert counters, f"no counter in the nft ruleset of {ns}:\n{listing}"
        return sum(int(packets) for packets, _ in counters)

    def remove_packet_loss(self, ns: str) -> None:
        self.exec(ns, "nft", "delete", "table", "inet", NFT_TABLE, check=False)

    def kill_processes(self) -> None:
        """SIGKILL everything still running in either namespace (stale proxies and ranks)."""
        for ns in self.namespaces:
            kill_namespace_processes(ns)


@contextlib.contextmanager
def two_hosts(rate: str | None = None) -> Iterator[TwoHosts]:
    """Build the two hosts (skip the test where that is impossible); always tear down."""
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    hosts = TwoHosts(unique_prefix())
    env = clean_env(ADACOMP_VENV=str(VENV))
    try:
        run(
            [str(TWOHOST), "up", hosts.prefix, *([rate] if rate else [])],
            env=env,
            timeout=SHORT_TIMEOUT_S,
        )
        yield hosts
    finally:
        hosts.kill_processes()
        run([str(TWOHOST), "down", hosts.prefix], env=env, timeout=SHORT_TIMEOUT_S, check=False)
