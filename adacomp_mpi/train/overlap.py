"""Encode while backward runs: each gradient goes to the codec the moment
autograd has produced it, on a worker thread.

A post-accumulate-grad hook on every parameter queues its tensor; one worker
thread encodes the queue in arrival order (NumPy releases the GIL in its
loops, and torch's backward in its kernels, so the two run side by side when
a core is free). After backward, ``finish`` waits for the stragglers and
packs the one payload. On a GPU the hook first starts an asynchronous copy of
that gradient into the pinned host buffer on a side stream, and the worker
waits for that copy alone, so the transfer and the codec both overlap the
rest of backward.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch

from adacomp_mpi.codec.api import Encoded
from adacomp_mpi.codec.state import CodecState
from adacomp_mpi.codec.stepwise import StepEncoder

from .gradients import GradientBridge


class OverlappedEncoder:
    """Hooks on every parameter and the worker that encodes what they queue."""

    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        *,
        bridge: GradientBridge,
        state: CodecState,
        prepare: Callable[[torch.nn.Parameter], None] | None = None,
    ) -> None:
        """``prepare``: applied to each parameter's gradient, on the thread that
        ran backward, before it is queued (momentum correction's weight decay)."""
        self.state = state
        self._prepare = prepare
        self._views = [bridge.buffer.views[spec.name] for spec in state.specs]
        self._host = [bridge.host_flat[a:b] for a, b in pairwise(bridge.offsets)]
        self._params = list(params)
        self._stream = None if bridge.on_host else torch.cuda.Stream()
        self._queue: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
        self._done = threading.Event()
        self._step: StepEncoder | None = None
        self._queued: set[int] = set()
        self._remaining, self._error = 0, None
        self.busy_seconds = 0.0  # worker time spent encoding, summed over steps
        self._handles = [
            param.register_post_accumulate_grad_hook(self._hook_for(index))
            for index, param in enumerate(self._params)
        ]
        self._worker = threading.Thread(target=self._work, name="adacomp-encoder", daemon=True)
        self._worker.start()

    def begin(self, *, dense: bool) -> None:
        """Before backward: the next gradients belong to a new step."""
        self._queued, self._remaining, self._error = set(), len(self._params), None
        self._done.clear()
        self._step = StepEncoder(self.state, dense=dense)

    def _hook_for(self, index: int) -> Callable[[torch.nn.Parameter], None]:
        def ready(param: torch.nn.Parameter) -> None:
            if self._step is not None and index not in self._queued:
                self._queue_tensor(index, param)

        return ready

    def _queue_tensor(self, index: int, param: torch.nn.Parameter) -> None:
        self._queued.add(index)
        if self._prepare is not None:
            self._prepare(param)
        self._queue.put((index, self._copy_to_host(index, param)))

    def _copy_to_host(self, index: int, param: torch.nn.Parameter) -> Any:
        """On a GPU: start copying this gradient to the host; the event to wait for."""
        if self._stream is None:
            return None  # on the CPU the host view is the gradient itself
        produced = torch.cuda.current_stream().record_event()
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(produced)
            self._host[index].copy_(param.grad.reshape(-1), non_blocking=True)
            return self._stream.record_event()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            index, copied = item
            started = time.perf_counter()
            try:
                if copied is not None:
                    copied.synchronize()
                if self._error is None:
                    self._step.add(index, self._views[index])
            except ValueError as error:  # a non-finite gradient: the step is void
                self._error = error
            self.busy_seconds += time.perf_counter() - started
            self._remaining -= 1
            if self._remaining == 0:
                self._done.set()

    def _drain(self) -> None:
        """Queue what autograd never touched (unused parameters: zero
        gradients), then wait until the worker has been through everything."""
        for index, param in enumerate(self._params):
            if index not in self._queued:
                self._queue_tensor(index, param)
        self._done.wait()

    def finish(self) -> Encoded | None:
        """After backward: this step's payload, or None if a gradient was not
        finite (then no residue has changed)."""
        self._drain()
        step, self._step = self._step, None
        return None if self._error is not None else step.finish()

    def cancel(self) -> None:
        """After backward, when the step is void anyway (a non-finite loss):
        encode nothing more and change no residue."""
        self._error = self._error or ValueError("step cancelled")
        self._drain()
        self._step = None

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._queue.put(None)
        self._worker.join(timeout=5)
