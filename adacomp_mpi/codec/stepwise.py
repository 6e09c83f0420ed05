"""Encode one step tensor by tensor, in any order, then pack the payload.

What overlapping the codec with backward needs: autograd produces gradients
last layer first, one at a time, and each can be encoded as soon as it is
ready (on another thread than the one that packs). The payload is still the
same one, in layout order, byte for byte what ``encode`` makes, and the new
residues take over only in ``finish``: a step abandoned before it (a
non-finite gradient) leaves the state exactly as it was.
"""

from __future__ import annotations

import numpy as np

from .api import Encoded, _count, _encode_tensor, _flat_float32, commit
from .counters import StepCounts
from .state import CodecState
from .wire import Positions, Record, pack_payload


class StepEncoder:
    """One step's records, filled by ``add`` in any order, packed by ``finish``."""

    def __init__(self, state: CodecState, *, dense: bool = False) -> None:
        self.state, self.dense = state, dense
        self._records: list[Record | None] = [None] * len(state.specs)
        self._positions: list[Positions] = [()] * len(state.specs)

    def add(self, index: int, grad: np.ndarray) -> None:
        """Encode tensor ``index`` of the layout now (ValueError if not finite)."""
        spec = self.state.specs[index]
        flat = _flat_float32(spec.name, grad, spec.numel)
        self._records[index], self._positions[index] = _encode_tensor(
            self.state, index, flat, self.dense
        )

    def finish(self) -> Encoded:
        """The payload of every tensor added; the new residues take over."""
        specs = self.state.specs
        missing = [
            spec.name for spec, record in zip(specs, self._records, strict=True) if record is None
        ]
        if missing:
            raise ValueError(f"step not fully encoded: missing {', '.join(missing[:5])}")
        records: list[Record] = list(self._records)  # type: ignore[arg-type]
        counts: StepCounts = {}
        for spec, record in zip(specs, records, strict=True):
            _count(counts, spec, record)
        payload = pack_payload(records, specs)
        commit(self.state, dense=self.dense)
        return Encoded(payload, counts, tuple(self._positions))
