"""Suite-wide hooks: the ``fault`` marker, and a count of the fault scenarios run.

At the end of a session that ran any ``fault`` test, the terminal summary
says ``fault suite: N scenarios run, M passed`` (plus failures and skips),
followed by the times each scenario measured (``record_property``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_helpers import Job

FAULT = "fault"


class FaultTally:
    """Outcome and measured properties of every ``fault`` test in this session."""

    def __init__(self) -> None:
        self.fault_ids: set[str] = set()
        self.outcomes: dict[str, str] = {}
        self.properties: dict[str, list[tuple[str, object]]] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.fault_ids = {item.nodeid for item in items if item.get_closest_marker(FAULT)}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.fault_ids:
            return
        if report.failed:
            self.outcomes[report.nodeid] = "failed"
        elif report.skipped:
            self.outcomes.setdefault(report.nodeid, "skipped")
        elif report.when == "call":
            self.outcomes.setdefault(report.nodeid, "passed")
        if report.when == "call" and report.user_properties:
            self.properties[report.nodeid] = list(report.user_properties)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.outcomes:
            return
        counts = {
            outcome: sum(1 for o in self.outcomes.values() if o == outcome)
            for outcome in ("passed", "failed", "skipped")
        }
        run = counts["passed"] + counts["failed"]
        line = f"fault suite: {run} scenarios run, {counts['passed']} passed"
        if counts["failed"]:
            line += f", {counts['failed']} failed"
        if counts["skipped"]:
            line += f", {counts['skipped']} skipped"
        terminalreporter.write_sep("-", line)
        for nodeid, properties in self.properties.items():
            measured = ", ".join(f"{key}={value}" for key, value in properties)
            terminalreporter.write_line(f"  {nodeid.split('::')[-1]}: {measured}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{FAULT}: fault-injection scenario (signals, kills, crashes, corrupt files)"
    )
    config.pluginmanager.register(FaultTally(), "fault-tally")


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    """Background jobs of one test; whatever is still running at the end is killed."""
    started: list[Job] = []
    yield started
    for job in started:
        job.kill_all()
