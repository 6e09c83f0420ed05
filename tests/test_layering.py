"""The layering that the package layout promises, enforced from the import graph.

codec (NumPy only) <- dist (MPI) <- train (torch); report reads runs offline.
Read statically with ``ast`` (every import, at module level or inside a
function), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package name it installs as (pyproject's package-dir).
SOURCES = {"adacomp_mpi": "adacomp_mpi", "cli": "adacomp_mpi.cli", "models": "adacomp_mpi.models"}
MAX_MODULE_LINES = 300
STDLIB = sys.stdlib_module_names


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> Iterator[str]:
    """Absolute names of everything ``name`` imports (relative imports resolved)."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            yield base
            for alias in node.names:  # "from . import checkpoint" names a module
                if f"{base}.{alias.name}" in MODULES:
                    yield f"{base}.{alias.name}"


def _project_edges(name: str) -> set[str]:
    return {target for target in _imports(name) if target in MODULES}


def _top(name: str) -> str:
    return name.split(".")[0]


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_codec_imports_only_numpy_the_standard_library_and_itself() -> None:
    codec = [name for name in MODULES if _in(name, "adacomp_mpi.codec")]
    assert len(codec) >= 8
    for name in codec:
        for target in _imports(name):
            allowed = _in(target, "adacomp_mpi.codec") or _top(target) in {"numpy", *STDLIB}
            assert allowed, f"{name} imports {target}"


def test_only_one_module_imports_mpi4py() -> None:
    users = {name for name in MODULES if any(_top(t) == "mpi4py" for t in _imports(name))}
    assert users == {"adacomp_mpi.dist.communicator"}


def test_distribution_does_not_need_torch_or_the_trainer() -> None:
    for name in [n for n in MODULES if _in(n, "adacomp_mpi.dist")]:
        for target in _imports(name):
            assert _top(target) != "torch", f"{name} imports torch"
            assert not _in(target, "adacomp_mpi.train"), f"{name} imports {target}"


def test_the_report_package_needs_neither_torch_nor_mpi_nor_the_trainer() -> None:
    for name in [n for n in MODULES if _in(n, "adacomp_mpi.report")]:
        for target in _imports(name):
            assert _top(target) not in {"torch", "mpi4py"}, f"{name} imports {target}"
            for layer in ("adacomp_mpi.dist", "adacomp_mpi.train", "adacomp_mpi.cli"):
                assert not _in(target, layer), f"{name} imports {target}"


def test_the_report_runs_with_mpi_and_torch_unavailable() -> None:
    """Import every report module in a fresh interpreter where importing
    mpi4py or torch fails, and read a recorded run."""
    recorded = ROOT / "tests" / "data" / "recorded_runs" / "adacomp_mlp_n2"
    code = (
        "import sys; sys.modules['mpi4py'] = None; sys.modules['torch'] = None\n"
        "import adacomp_mpi.report.plots, adacomp_mpi.report.write\n"
        "from adacomp_mpi.report.runs import load_run\n"
        f"print(len(load_run({str(recorded)!r}).steps))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start through the graph, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for target in graph[node]:
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_there_are_no_import_cycles() -> None:
    # A package's __init__ re-exporting its modules is not a cycle of layers:
    # leave out edges from a package to its own submodules.
    graph = {
        name: {t for t in _project_edges(name) if not (_is_package(name) and _in(t, name))}
        for name in MODULES
    }
    cycles = [cycle for name in MODULES if (cycle := _cycle_from(name, graph))]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles[:3])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name}: {lines} lines"
