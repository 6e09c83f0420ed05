"""The resolved options of one training run (built by the CLI, read by the trainer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..codec.shared_selection import DEFAULT_PER_BIN

RUNS_DIR = Path("runs")  # where a run without --output-dir gets a fresh directory
LATEST_LINK = "latest"  # RUNS_DIR/latest -> the newest of them
OVERLAP_MODES = ("auto", "on", "off")  # --overlap; auto: train/overlap_choice.py
CHECKPOINTS_DIR = "checkpoints"  # OUTPUT_DIR/checkpoints/<step-N> holds a run's checkpoints


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; JSON-serialisable via ``to_dict``."""

    model: str = "mlp"
    model_options: dict[str, str] = field(default_factory=dict)  # --model-option KEY=VALUE
    dataset: str = "digits"
    data_path: Path | None = None
    epochs: int = 25
    batch_size: int = 16
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    compression: str = "adacomp"
    bin_sizes: dict[str, int] = field(default_factory=dict)
    dense_below: int = 256
    scale_rule: str = "mean_abs"
    index_coding: str = "auto"
    overlap: str = "auto"  # encode during backward: on, off, or auto (the faster, timed)
    dense_warmup_steps: int = 0  # first optimizer steps sent uncompressed
    bin_warmup_steps: int = 0  # AdaComp's L_T / 8, / 4, / 2 over these first steps
    momentum_correction: bool = True  # SGD: local velocity + masking (docs/CODEC.md)
    momentum_masking: str = "auto"  # the tensors whose sent velocity is zeroed (correction.py)
    compressed_momentum: float | None = 0.5  # momentum compensation; None: off (train/optim.py)
    remedy_min_bin: int = 100  # compensation, correction only where L_T >= this (not conv)
    compress_vectors: bool = True  # also compress 1-D tensors of >= dense_below elements
    adam_preconditioning: bool = True  # Adam: g / (sqrt(v_local) + eps) into the codec
    scalecom_beta: float = 0.5  # scalecom: residue low-pass filter; 1: plain error feedback
    scalecom_values: str = "fp32"  # scalecom: value type in the Allreduce (fp32 or fp16)
    scalecom_selection: str = "fixed"  # scalecom: top M per bin, or "adaptive" (AdaComp's rule)
    scalecom_per_bin: dict[str, int] = field(default_factory=dict)  # M by kind or name
    lr_schedule: str = "constant"  # constant, step or cosine (train/schedule.py)
    lr_warmup_steps: int = 0  # linear learning-rate warm-up from 0
    lr_step_every: int = 0  # step schedule: decay every N steps (0: at 1/2 and 3/4)
    lr_gamma: float = 0.1  # step schedule: decay factor
    clip_grad_norm: float = 0.0  # clip the averaged gradient to this global norm; 0: off
    accumulate: int = 1  # micro-batches per optimizer step (one exchange per step)
    precision: str = "fp32"  # bf16 or fp16: autocast of the forward pass (fp16: loss scale)
    max_steps: int = 0  # stop after this many optimizer steps; 0: the epochs decide
    time_limit: float = 0.0  # stop (with a checkpoint) after this many seconds; 0: off
    eval_every: int = 0  # also evaluate every N optimizer steps; 0: once per epoch
    val_fraction: float = 0.0  # carve this share of the training data as a validation split
    init_from: str | None = None  # start from these weights (a checkpoint or a model.pt)
    seed: int = 0
    output_dir: Path | None = None  # None: a fresh RUNS_DIR/<YYYYmmdd-HHMMSS> (train/run.py)
    overwrite: bool = False  # clear a finished run's files in output_dir before starting
    tensorboard: bool = False  # also write TensorBoard scalars to OUTPUT_DIR/tensorboard
    standardize: bool = False  # npz: per-feature mean/std of the training split
    summary: Path | None = None
    quiet: bool = False
    log_all_ranks: bool = False
    checkpoint_every: int = 0  # 0: only on preemption or a non-finite stop
    checkpoint_unit: str = "steps"  # or "epochs"
    keep_checkpoints: int = 3
    resume: str | None = None  # a checkpoint directory, or "auto"
    on_nonfinite: str = "skip"  # or "stop"
    max_skipped_fraction: float = 0.2  # more skipped steps than this: the run failed
    stall_timeout: float = 300.0  # seconds without progress before the job aborts; 0: off

    def __post_init__(self) -> None:
        # M for every layer kind, not only the ones given: what a saved run's
        # table means must not move when DEFAULT_PER_BIN does.
        object.__setattr__(self, "scalecom_per_bin", {**DEFAULT_PER_BIN, **self.scalecom_per_bin})

    @property
    def run_dir(self) -> Path:
        """output_dir; before a fresh one is picked, the link to the newest run."""
        return self.output_dir if self.output_dir is not None else RUNS_DIR / LATEST_LINK

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINTS_DIR

    @property
    def summary_path(self) -> Path:
        return self.summary if self.summary is not None else self.run_dir / "summary.json"

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


# Options that shape the training trajectory: a resume must not change them.
TRAJECTORY_OPTIONS = (
    "model",
    "model_options",
    "dataset",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "compression",
    "bin_sizes",
    "dense_below",
    "scale_rule",
    "index_coding",
    "dense_warmup_steps",
    "bin_warmup_steps",
    "momentum_correction",
    "momentum_masking",
    "compressed_momentum",
    "remedy_min_bin",
    "compress_vectors",
    "adam_preconditioning",
    "scalecom_beta",
    "scalecom_values",
    "scalecom_selection",
    "scalecom_per_bin",
    "lr_schedule",
    "lr_warmup_steps",
    "lr_step_every",
    "lr_gamma",
    "clip_grad_norm",
    "accumulate",
    "precision",
    "init_from",
    "standardize",
    "val_fraction",
    "seed",
)

# What a run whose checkpoint predates an option did, where that is not the
# option's default today (the remedies came after the first checkpoints).
PREDATED: dict[str, Any] = {
    "momentum_correction": False,
    "momentum_masking": "all",  # DGC's masking on every tensor
    "compress_vectors": False,
    "adam_preconditioning": False,
    "compressed_momentum": None,
    "remedy_min_bin": 0,  # every tensor compensated
    "scalecom_selection": "adaptive",
    "scalecom_beta": 1.0,
    "scalecom_per_bin": {},  # filled from PREDATED_PER_BIN
}

# M per bin before conv's default became 3: a saved table that lacks a layer
# kind (every table saved before tables were recorded whole) ran with these.
PREDATED_PER_BIN: dict[str, int] = {"conv": 2, "fc": 5, "recurrent": 5, "embedding": 5, "other": 5}

# Options that only one compression mode reads: a resume compares them only
# for a run in that mode (an AdaComp run does not depend on the scalecom filter).
MODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "scalecom": ("scalecom_beta", "scalecom_values", "scalecom_selection", "scalecom_per_bin"),
}
