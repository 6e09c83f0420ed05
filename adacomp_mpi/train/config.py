"""The resolved options of one training run (built by the CLI, read by the trainer)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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
    warmup_steps: int = 0
    seed: int = 0
    output_dir: Path = Path("runs/latest")
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

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def summary_path(self) -> Path:
        return self.summary if self.summary is not None else self.output_dir / "summary.json"

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
    "warmup_steps",
    "seed",
)
