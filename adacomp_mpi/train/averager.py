"""AdaComp gradient averaging for a training loop you write yourself.

What Horovod's ``DistributedOptimizer`` or a DDP communication hook give, for
this project's exchange: between ``loss.backward()`` and ``optimizer.step()``,
``synchronize()`` replaces every ``.grad`` with the mean over all ranks, sent
AdaComp-compressed (one Allgatherv per step) and bit-identical everywhere, so
replicas that start identical stay identical without broadcasting again::

    averager = GradientAverager(model)          # collective: every rank, same model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for inputs, targets in my_shard:            # the same number of steps on every rank
        averager.zero_grad()                    # not optimizer.zero_grad(): see below
        loss_fn(model(inputs), targets).backward()
        if averager.synchronize():              # collective; False: some rank had NaN/Inf
            optimizer.step()

Every ``.grad`` is a view into one flat float32 buffer that the codec reads
without copying. ``optimizer.zero_grad()`` (torch's default ``set_to_none=True``)
drops those views; ``synchronize()`` notices, copies the new gradients back into
the buffer and restores the views, so that still works, at the cost of one copy
per step. ``averager.zero_grad()`` (or ``optimizer.zero_grad(set_to_none=False)``)
avoids it. Each rank's codec residues are training state: checkpoint
``state_dict()`` per rank, next to the model and the optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from adacomp_mpi.codec import LAYER_KINDS, CodecConfig, CompressionPolicy, TensorSpec, make_state
from adacomp_mpi.codec.state import ARRAY_KEYS
from adacomp_mpi.dist.communicator import Communicator, MpiCommunicator
from adacomp_mpi.dist.exchange import EXCHANGES, make_exchange
from adacomp_mpi.report.schema import FLOAT32_BYTES, ratio

from .gradients import GradientBridge
from .layers import gradient_specs

COUNTERS = ("bytes_sent", "dense_bytes", "steps", "skipped_steps")


def _param_specs(
    params: Iterable[nn.Parameter], policy: CompressionPolicy
) -> tuple[list[TensorSpec], list[nn.Parameter]]:
    """Specs for bare parameters: no modules, so no layer types to go by. Each
    is named by its position in ``params`` ("0", "1", ...) and counts as "fc"
    when it has two or more dimensions, "other" (never compressed) otherwise."""
    specs, kept, seen = [], [], set()
    for position, param in enumerate(params):
        if not isinstance(param, torch.Tensor):
            raise TypeError(f"parameter {position} is a {type(param).__name__}, not a tensor")
        if not param.requires_grad or id(param) in seen:
            continue  # frozen, or listed twice
        seen.add(id(param))
        kind = "fc" if param.dim() > 1 else "other"
        specs.append(policy.spec_for(str(position), param.numel(), kind))
        kept.append(param)
    return specs, kept


def _check(specs: list[TensorSpec], params: list[nn.Parameter], bin_sizes: Mapping) -> None:
    if not params:
        raise ValueError("no parameter requires a gradient: there is nothing to average")
    names = [spec.name for spec in specs]
    unknown = sorted(set(bin_sizes) - set(LAYER_KINDS) - set(names))
    if unknown:  # a misspelt key would otherwise be ignored without a word
        raise ValueError(
            f"bin_sizes key(s) {unknown} name neither a layer kind {list(LAYER_KINDS)} "
            f"nor a parameter ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
        )
    for spec, param in zip(specs, params, strict=True):
        if param.dtype != torch.float32:  # the flat buffer and the codec are float32
            raise ValueError(f"parameter {spec.name} is {param.dtype}; only float32 is supported")
        if param.device != params[0].device:
            raise ValueError(f"parameter {spec.name} is on {param.device}, not {params[0].device}")


class GradientAverager:
    """Averages the gradients of ``model_or_params`` over every rank of ``comm``.

    Construction is collective: every rank must build it with the same model
    layout and options (checked: ValueError on every rank otherwise, rather
    than a hang or a garbled exchange). With ``broadcast`` (the default) rank
    0's parameters and buffers are copied everywhere, so the replicas start
    identical whatever each rank's seed was.

    ``model_or_params``: an ``nn.Module`` (layer kinds, and so the bin sizes
    L_T, come from module types, as in ``adacomp-train``) or an iterable of
    parameters (named "0", "1", ... by position; kind "fc" for >= 2-D tensors,
    "other" for 1-D ones, which always go dense). Frozen parameters are left out.
    ``comm``: default ``MpiCommunicator()`` (COMM_WORLD). ``compression``:
    "adacomp" or "none" (a dense Allreduce, the baseline). ``bin_sizes``
    overrides L_T by layer kind or parameter name; tensors under ``dense_below``
    elements go dense; ``scale_rule`` and ``index_coding`` are the codec's rules.
    ``momentum`` > 0 turns on momentum correction with masking (docs/CODEC.md):
    each rank keeps a local velocity and sends it, so build the optimizer as
    plain SGD (``momentum=0``) and put weight decay into the gradients yourself.
    ``adam_beta2`` > 0 (e.g. 0.999): Adam preconditioning (docs/CODEC.md); build
    the optimizer as ``SGD(momentum=beta1, dampening=beta1)``, Adam's first moment.
    """

    def __init__(
        self,
        model_or_params: nn.Module | Iterable[nn.Parameter],
        *,
        comm: Communicator | None = None,
        compression: str = "adacomp",
        bin_sizes: Mapping[str, int] | None = None,
        dense_below: int = 256,
        scale_rule: str = "mean_abs",
        index_coding: str = "auto",
        momentum: float = 0.0,
        adam_beta2: float = 0.0,
        broadcast: bool = True,
    ) -> None:
        self.comm: Communicator = comm if comm is not None else MpiCommunicator()
        self.compression = compression
        error: Exception | None = None
        try:  # every rank reaches the collective below, even one whose options are bad
            if compression not in EXCHANGES:
                raise ValueError(
                    f"unknown compression {compression!r}; choose from {list(EXCHANGES)}"
                )
            bin_sizes = dict(bin_sizes or {})
            policy = CompressionPolicy(bin_sizes=bin_sizes, dense_below=dense_below)
            if isinstance(model_or_params, nn.Module):
                specs, params = gradient_specs(model_or_params, policy)
            else:
                specs, params = _param_specs(model_or_params, policy)
            _check(specs, params, bin_sizes)
            config = CodecConfig(
                scale_rule=scale_rule,
                index_coding=index_coding,
                momentum=momentum if compression == "adacomp" else 0.0,
                adam_beta2=adam_beta2 if compression == "adacomp" else 0.0,
                adam_ranks=self.comm.size,
            )
            tensors = _broadcast_list(model_or_params, params) if broadcast else []
            shapes = [(str(t.dtype), tuple(t.shape)) for t in tensors]
            options = (compression, scale_rule, index_coding, momentum, adam_beta2, dense_below)
            layout = (*options, specs, shapes)
        except (ValueError, TypeError, KeyError) as failure:
            error, layout = failure, None
        self._agree(error, layout)
        if broadcast:
            _broadcast(tensors, self.comm)
        self.specs: tuple[TensorSpec, ...] = tuple(specs)
        self.params: list[nn.Parameter] = params
        self._state = make_state(specs, config)
        self._exchange = make_exchange(compression, comm=self.comm, state=self._state)
        self._bridge = GradientBridge(params, specs)
        self._views = [param.grad for param in params]  # what each .grad must stay
        self.numel = sum(spec.numel for spec in specs)
        self.bytes_sent = 0  # this rank's payload bytes, over every synchronize()
        self.dense_bytes = 0  # what float32 gradients would have cost instead
        self.steps = 0  # synchronize() calls
        self.skipped_steps = 0  # of which returned False

    def _agree(self, error: Exception | None, layout: tuple | None) -> None:
        """One allgather: fail on every rank if any rank failed or has another layout."""
        gathered = self.comm.allgather_object((None if error is None else str(error), layout))
        if error is not None:
            raise error
        failed = [
            f"rank {rank}: {message}" for rank, (message, _) in enumerate(gathered) if message
        ]
        if failed:
            raise ValueError("GradientAverager failed on another rank; " + "; ".join(failed))
        differ = [rank for rank, (_, other) in enumerate(gathered) if other != gathered[0][1]]
        if differ:
            raise ValueError(
                f"rank(s) {differ} have another model layout or other options than rank 0: "
                "every rank must build the same model with the same GradientAverager options"
            )

    @property
    def compression_ratio(self) -> float | None:
        """Dense float32 bytes / bytes this rank sent, over every step so far
        (None before the first). Dense warm-up steps and skipped steps count."""
        return ratio(self.dense_bytes, self.bytes_sent)

    def zero_grad(self) -> None:
        """Zero every gradient in place, keeping the ``.grad`` views into the
        flat buffer (use it instead of ``optimizer.zero_grad()``)."""
        self._restore_views()
        self._bridge.zero()

    @torch.no_grad()  # a create_graph=True gradient is copied as data, not as a graph
    def _restore_views(self) -> None:
        """Put back any ``.grad`` the user's loop replaced (``set_to_none``, or
        autograd allocating a fresh one), copying its values into the buffer;
        a ``.grad`` that is None (no gradient reached it) becomes zeros."""
        for param, view in zip(self.params, self._views, strict=True):
            grad = param.grad
            if grad is view:
                continue
            if grad is None:
                view.zero_()
            elif grad.data_ptr() != view.data_ptr():
                view.copy_(grad)
            param.grad = view

    def synchronize(self, *, dense: bool = False) -> bool:
        """Collective: replace every ``.grad`` with its mean over the ranks.

        Call it on every rank, once per step, after ``backward()``. Returns
        False when some rank's gradient held a NaN or an infinity: then every
        rank gets False, the step must be skipped (``if averager.synchronize():
        optimizer.step()``), the ``.grad`` are zeroed (so a step taken anyway
        stays identical across ranks) and each rank's residues keep what it
        would have sent. ``dense=True`` sends this step uncompressed (warm-up).
        """
        self._restore_views()
        grads = self._bridge.to_host()
        traffic = self._exchange.average(grads, dense=dense, finite=grads.is_finite())
        self.steps += 1
        self.bytes_sent += traffic.sizes[self.comm.rank]
        self.dense_bytes += FLOAT32_BYTES * self.numel
        if not traffic.applied:
            self.skipped_steps += 1
            self._bridge.zero()
            return False
        self._bridge.from_host()
        return True

    def state_dict(self) -> dict[str, Any]:
        """This rank's codec residues (CPU tensors, so ``torch.save(...,
        weights_only=True)`` takes them) and counters. Residues differ per rank:
        save one per rank. Dropping them loses the gradient not yet sent."""
        codec = self._state.state_dict()
        return {
            "compression": self.compression,
            **{key: _tensors(codec[key]) for key in ARRAY_KEYS if key in codec},
            **({"adam_steps": codec["adam_steps"]} if "adam_steps" in codec else {}),
            **{name: getattr(self, name) for name in COUNTERS},
        }

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``; ValueError (nothing changed) if it does not
        fit this layout or compression."""
        missing = {"compression", "residues", *COUNTERS} - set(saved)
        if missing:
            raise ValueError(f"not a GradientAverager state_dict: no {sorted(missing)}")
        if saved["compression"] != self.compression:
            raise ValueError(
                f"state_dict is for compression {saved['compression']!r}, not {self.compression!r}"
            )
        residues = {name: _array(value) for name, value in dict(saved["residues"]).items()}
        if set(residues) != {spec.name for spec in self.specs}:
            raise ValueError("state_dict was saved for another model layout (tensor names differ)")
        for spec, target in zip(self.specs, self._state.residues, strict=True):
            if residues[spec.name].shape != target.shape:
                shape = residues[spec.name].shape
                raise ValueError(
                    f"residue {spec.name}: shape {shape}, this layout has {target.shape}"
                )
        counters = {name: saved[name] for name in COUNTERS}
        if not all(type(value) is int and value >= 0 for value in counters.values()):
            raise ValueError(f"state_dict counters must be integers >= 0, got {counters}")
        codec: dict[str, Any] = {"residues": residues, "adam_steps": saved.get("adam_steps", 0)}
        for key in set(ARRAY_KEYS[1:]) & set(saved):  # velocities, second moments
            codec[key] = {k: _array(v) for k, v in dict(saved[key]).items()}
        self._state.load_state_dict(codec)  # checks them before changing anything
        for name, value in counters.items():
            setattr(self, name, value)


def _broadcast_list(model_or_params: Any, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """What ``broadcast`` copies from rank 0: a module's parameters and buffers
    (frozen ones and norm statistics too), or the bare parameters given."""
    if isinstance(model_or_params, nn.Module):
        return [*model_or_params.parameters(), *model_or_params.buffers()]
    return params


def _broadcast(tensors: list[torch.Tensor], comm: Communicator) -> None:
    """Collective: rank 0's values of ``tensors`` everywhere (what the trainer's
    ``build.broadcast_module`` does; not imported, as that module brings every model)."""
    for tensor in tensors:
        host = tensor.detach().cpu().contiguous().numpy()
        comm.broadcast(host, root=0)
        tensor.data.copy_(torch.from_numpy(host))


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array) for name, array in arrays.items()}


def _array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float32)


__all__ = ["GradientAverager"]
