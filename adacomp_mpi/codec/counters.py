"""What one encode sent, per layer kind: the figures behind every compression ratio."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class KindCounters:
    """Counts for one layer kind (or for all of them) over one or more steps."""

    elements: int = 0  # gradient elements encoded
    sent: int = 0  # elements sent (dense records count every element)
    coded_sent: int = 0  # elements sent through AdaComp records
    coded_bytes: int = 0  # index/sign stream bytes of AdaComp records
    record_bytes: int = 0  # record headers + bodies + padding

    def add(self, other: KindCounters) -> None:
        for name in KIND_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


# The counter names, in order: the one source for the metrics and the summary.
KIND_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(KindCounters))

StepCounts = dict[str, KindCounters]  # layer kind -> what this step's payload holds
