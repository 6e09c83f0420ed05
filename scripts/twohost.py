"""The two network-namespace hosts of scripts/netns/twohost.sh, driven from
Python: the one helper every benchmark that runs jobs across them shares."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click

TWOHOST = Path(__file__).resolve().parent / "netns" / "twohost.sh"


def twohost(*args: str, timeout: float = 60) -> str:
    """Run ``twohost.sh ARGS`` (up, down, bytes, ...); its stdout, or a one-line error."""
    done = subprocess.run(
        ["bash", str(TWOHOST), *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise click.ClickException(f"twohost {args[0]}: {done.stderr.strip() or done.stdout}")
    return done.stdout.strip()
