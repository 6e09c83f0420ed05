"""Build a run: data, device, a model synchronised from rank 0, the codec and
the exchange, wired into a ``Trainer``."""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from adacomp_mpi.codec.shared_selection import ScaleComConfig, SharedSelection
from adacomp_mpi.codec.specs import LAYER_KINDS, CompressionPolicy, TensorSpec
from adacomp_mpi.codec.state import make_state
from adacomp_mpi.common.errors import UsageError
from adacomp_mpi.common.log import get_logger
from adacomp_mpi.datasets import ArrayDataset, load_dataset
from adacomp_mpi.datasets.standardize import standardize
from adacomp_mpi.datasets.validation import carve_validation
from adacomp_mpi.dist.agree import agree
from adacomp_mpi.dist.communicator import Communicator
from adacomp_mpi.dist.exchange import make_exchange
from adacomp_mpi.dist.launch import Launch
from adacomp_mpi.models import ModelInputs, build_model, user_model_digest

from .config import TrainConfig
from .correction import (
    LocalUpdate,
    effective_bin_sizes,
    local_update,
    masking_rule,
    unmasked_momentum,
    why_not,
)
from .gradients import GradientBridge
from .layers import gradient_specs
from .ledger import Ledger
from .loss_scale import LossScale
from .model_file import init_from
from .optim import (
    COMPRESSED,
    OPTIMIZERS,
    OptimizerSettings,
    describe_change,
    make_optimizer,
    settings_for,
)
from .overlap import OverlappedEncoder
from .overlap_choice import OverlapTrial
from .schedule import Schedule
from .trainer import Trainer


def choose_device(launch: Launch, rank: int) -> torch.device:
    """One GPU per local rank when CUDA is there, else the CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", launch.local_rank(rank) % torch.cuda.device_count())
        get_logger().info("device: %s (one GPU per local rank)", device)
    else:
        device = torch.device("cpu")
        get_logger().info("device: cpu (CUDA not available)")
    return device


def cores_per_rank(launch: Launch, rank: int) -> int:
    """This host's cores (those this process may run on) shared among its ranks."""
    ranks_here = launch.ranks_per_host()[launch.hostnames[rank]]
    return max(1, len(os.sched_getaffinity(0)) // ranks_here)


def set_compute_threads(launch: Launch, rank: int, *, reserve: int = 0) -> int:
    """Share the host's cores among the ranks on it (as torchrun does), less
    ``reserve`` for the encoder thread, unless OMP_NUM_THREADS says otherwise:
    N ranks each running torch with every core's worth of threads oversubscribe
    the host and slow every step."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, cores_per_rank(launch, rank) - reserve))
    threads = torch.get_num_threads()
    get_logger().info("torch threads per rank: %d", threads)
    return threads


def broadcast_module(module: nn.Module, comm: Communicator) -> None:
    """Collective: copy rank 0's parameters and buffers to every rank."""
    for tensor in [*module.parameters(), *module.buffers()]:
        host = tensor.detach().cpu().contiguous().numpy()
        comm.broadcast(host, root=0)
        tensor.data.copy_(torch.from_numpy(host))


def check_config(config: TrainConfig) -> None:
    """Options that contradict each other: one UsageError line, before any output."""
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(
            f"unknown optimizer {config.optimizer!r}; choose from {sorted(OPTIMIZERS)}"
        )
    if config.bin_warmup_steps and config.compression != "adacomp":
        raise UsageError(
            f"--bin-warmup-steps ramps AdaComp's L_T: it needs --compression adacomp, "
            f"not {config.compression}"
        )


def check_bin_size_keys(
    bin_sizes: dict[str, int], specs: list[TensorSpec], *, option: str = "--bin-size"
) -> None:
    """Every ``--bin-size`` (or ``--scalecom-per-bin``) key must name a layer kind
    or a parameter of this model: a misspelt key would otherwise be ignored
    without a word."""
    names = [spec.name for spec in specs]
    unknown = sorted(set(bin_sizes) - set(LAYER_KINDS) - set(names))
    if unknown:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise UsageError(
            f"{option} key(s) {', '.join(map(repr, unknown))} name neither a layer kind "
            f"({', '.join(LAYER_KINDS)}) nor a parameter of this model ({shown})"
        )


def _load(config: TrainConfig) -> ArrayDataset:
    """The dataset, less a validation split if asked, then standardized with
    the (remaining) training split's statistics if asked."""
    dataset = load_dataset(config.dataset, path=config.data_path)
    if config.val_fraction > 0:
        dataset = carve_validation(dataset, config.val_fraction)
    return standardize(dataset) if config.standardize else dataset


def _optimizer(
    config: TrainConfig,
    params: list[torch.nn.Parameter],
    specs: list[TensorSpec],
    settings: OptimizerSettings,
    *,
    local_momentum: bool,
    update: LocalUpdate,
) -> torch.optim.Optimizer:
    """The optimizer after momentum compensation or correction, both of which
    skip tensors binned finer than --remedy-min-bin; rank 0 logs the change once."""
    change = describe_change(config, settings, local_momentum=local_momentum)
    fine_bins = [
        (change is not None or local_momentum)
        and spec.compress
        and spec.bin_size < config.remedy_min_bin
        for spec in specs
    ]
    kept = f"tensors with L_T < {config.remedy_min_bin} keep momentum {config.momentum:g}"
    if change:
        get_logger().info("%s%s", change, f"; {kept} and lr" if any(fine_bins) else "")
    elif local_momentum and any(fine_bins):
        get_logger().info("momentum correction: %s in the optimizer", kept)
    return make_optimizer(
        config.optimizer,
        params,
        settings,
        preconditioned=update.preconditioned,
        fine_bins=fine_bins,
        asked=OptimizerSettings(config.lr, config.momentum, settings.weight_decay),
    )


def build_trainer(
    config: TrainConfig, comm: Communicator, device: torch.device, *, spare_core: bool = True
) -> Trainer:
    """Collective: load data, build and synchronise the model, wire the exchange.

    The overlapped encoder runs only with ``spare_core``: a worker thread that
    has no core of its own slows backward by more than it hides."""
    check_config(config)
    dataset = agree(comm, lambda: _load(config))
    inputs = ModelInputs(dataset.input_shape, dataset.num_classes, dataset.task)
    torch.manual_seed(config.seed)
    model, model_sha256 = agree(
        comm,
        lambda: (
            build_model(config.model, inputs, config.model_options),
            user_model_digest(config.model),
        ),
    )
    model = model.to(device)
    if config.init_from is not None:  # rank 0 reads, the broadcast below shares
        agree(comm, lambda: init_from(model, config.init_from) if comm.rank == 0 else None)
    broadcast_module(model, comm)
    policy = CompressionPolicy(
        bin_sizes=effective_bin_sizes(config),
        dense_below=config.dense_below,
        compress_vectors=config.compress_vectors,
    )
    specs, params = gradient_specs(model, policy)
    check_bin_size_keys(dict(config.bin_sizes), specs)
    check_bin_size_keys(dict(config.scalecom_per_bin), specs, option="--scalecom-per-bin")
    update = local_update(config, comm.size)
    reason = why_not(config)  # logged only where SGD with a residue would expect it on
    if reason and config.optimizer == "sgd" and config.compression in COMPRESSED:
        get_logger().info("momentum correction off: %s", reason)
    masking, lower = masking_rule(config), unmasked_momentum(config)
    if config.momentum_masking != "auto" and update.momentum == 0:
        get_logger().info("--momentum-masking has no effect: no momentum correction here")
    elif update.momentum > 0 and masking != "all":
        get_logger().info(
            "momentum correction: masking %s; unmasked tensors at momentum %g, step kept",
            masking,
            config.momentum if lower is None else lower,
        )
    codec_config = agree(
        comm,
        lambda: ScaleComConfig(
            config.scale_rule,
            config.index_coding,
            momentum=update.momentum,
            momentum_min_bin=config.remedy_min_bin,
            momentum_masking=masking,
            unmasked_momentum=lower,
            adam_beta2=update.adam_beta2,
            adam_ranks=comm.size,
            shared_beta=config.scalecom_beta,
            shared_values=config.scalecom_values,
            shared_selection=SharedSelection(
                config.scalecom_selection, dict(config.scalecom_per_bin)
            ),
        ),
    )
    state = make_state(specs, codec_config)
    bridge = GradientBridge(params, specs)
    wanted = config.overlap != "off" and config.compression == "adacomp"
    overlap = wanted and spare_core
    if wanted and not spare_core:
        get_logger().info("overlap off: no core to spare for the encoder thread on this host")
    if overlap and config.precision == "fp16":  # gradients are unscaled after backward
        overlap = False
        get_logger().info("overlap off: fp16 gradients are unscaled only after backward")
    if overlap and update.clip_norm > 0:  # the local norm must be known before any encode
        overlap = False
        get_logger().info("overlap off: the local update clips the whole local gradient")
    local_momentum = update.momentum > 0
    settings = settings_for(
        config, local_momentum=local_momentum, preconditioned=update.preconditioned
    )
    if update.preconditioned:
        get_logger().info("Adam preconditioning: each rank's g / (sqrt(s) + eps) is compressed")
    optimizer = _optimizer(
        config, params, specs, settings, local_momentum=local_momentum, update=update
    )
    steps_per_epoch = _steps_per_epoch(len(dataset.x_train), comm.size, config)
    return Trainer(
        config=config,
        comm=comm,
        dataset=dataset,
        model=model,
        optimizer=optimizer,
        base_lrs=tuple(group["lr"] for group in optimizer.param_groups),
        codec_state=state,
        exchange=make_exchange(config.compression, comm=comm, state=state),
        bridge=bridge,
        device=device,
        model_sha256=model_sha256,
        ledger=Ledger(
            numel=sum(spec.numel for spec in specs),
            world_size=comm.size,
            dense_mode=config.compression == "none",
        ),
        overlap=OverlappedEncoder(params, bridge=bridge, state=state, prepare=update.decay_hook)
        if overlap
        else None,
        overlap_trial=OverlapTrial() if overlap and config.overlap == "auto" else None,
        loss_scale=LossScale() if config.precision == "fp16" else None,
        local=update,
        schedule=Schedule(
            name=config.lr_schedule,
            warmup_steps=config.lr_warmup_steps,
            total_steps=_total_steps(steps_per_epoch, config),
            step_every=config.lr_step_every,
            gamma=config.lr_gamma,
        ),
    )


def _steps_per_epoch(samples: int, ranks: int, config: TrainConfig) -> int:
    """Optimizer steps in one epoch (see loop.step_plan)."""
    micro_batches = math.ceil((samples // ranks) / config.batch_size)
    return math.ceil(micro_batches / config.accumulate)


def _total_steps(steps_per_epoch: int, config: TrainConfig) -> int:
    total = steps_per_epoch * config.epochs
    return min(total, config.max_steps) if config.max_steps > 0 else total
