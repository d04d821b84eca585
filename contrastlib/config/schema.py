"""Typed configuration: one dataclass per section, loaded by omegaconf in struct mode.

Configs stop at the boundary: :mod:`contrastlib.pipeline` reads them and passes plain
keyword arguments to the parts it builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

#: Lightning precision names accepted by ``trainer.precision``.
TRAINER_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
ENCODE_PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "constant", "cosine")


class SimCSEMode(Enum):
    unsupervised = "unsupervised"
    supervised = "supervised"


@dataclass
class ModelConfig:
    #: Hugging Face id, local model dir, sentence-transformers dir, run dir or checkpoint.
    name: str = "all-MiniLM-L6-v2"
    #: Pooling over tokens; null keeps the model's own (sentence-transformers dirs) or mean.
    pooling: str | None = None
    #: L2-normalise embeddings; null keeps the model's own setting.
    normalize: bool | None = None
    max_seq_length: int = 64
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    #: Training file: .txt (one sentence per line) or .tsv/.csv/.jsonl pairs or triplets.
    train: str = MISSING
    batch_size: int = 64
    num_workers: int = 0
    #: Never put the same text twice in a batch (in-batch negatives stay negatives).
    no_duplicates: bool = True
    drop_last: bool = False
    #: Use only the first N rows of the training file (null: all).
    max_rows: int | None = None


@dataclass
class LossConfig:
    """The loss and its parameters; null means the loss's own default.

    A parameter the chosen loss does not take is an error (``contrastlib list`` shows the
    losses; docs/losses.md their parameters).
    """

    name: str = "info_nce"
    temperature: float | None = None
    learnable_temperature: bool | None = None
    symmetric: bool | None = None
    #: Stream InfoNCE over anchor chunks of this size (memory ~ chunk x candidates).
    chunk_size: int | None = None
    #: Candidates from every device under DDP (default on).
    gather_distributed: bool | None = None
    #: Debiased: class prior tau+ (Chuang et al.). Hardness: concentration beta (Robinson et al.).
    tau_plus: float | None = None
    beta: float | None = None
    #: DCLW weighting temperature.
    sigma: float | None = None
    #: ATI: lower bound of the per-example temperatures, and the DRO radius rho.
    min_temperature: float | None = None
    rho: float | None = None
    #: Triplet margin and distance (cosine or euclidean).
    margin: float | None = None
    metric: str | None = None
    #: Alignment-uniformity weight and exponents.
    lam: float | None = None
    alpha: float | None = None
    t: float | None = None


@dataclass
class MethodConfig:
    name: str = "simcse"
    #: unsupervised: each sentence twice under dropout; supervised: (anchor, positive[, negative]).
    mode: SimCSEMode = SimCSEMode.supervised


@dataclass
class OptimConfig:
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "linear"


@dataclass
class TrainerConfig:
    max_epochs: int = 1
    #: Stop after this many optimizer steps (-1: run max_epochs).
    max_steps: int = -1
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    #: Save checkpoints/last.ckpt every N optimizer steps (and at the end), for resuming.
    checkpoint_every_n_steps: int = 100
    enable_progress_bar: bool = True
    deterministic: bool = False


@dataclass
class GradCacheConfig:
    """Gradient caching: set ``chunk_size`` (rows) or ``token_budget`` (padded tokens per
    chunk, text) to decouple the batch size from memory. Both null: off."""

    chunk_size: int | None = None
    token_budget: int | None = None

    @property
    def enabled(self) -> bool:
        return self.chunk_size is not None or self.token_budget is not None


@dataclass
class EvalConfig:
    #: Scored-pair files (``sentence1 sentence2 score``) evaluated before and after training.
    sts: list[str] = field(default_factory=list)
    batch_size: int = 128
    precision: str = "fp32"


@dataclass
class RunConfig:
    name: str = "run"
    #: Runs are written to ``output_dir/name`` (``name-2``, ... if it exists and resume is off).
    output_dir: str = "runs"
    seed: int = 42
    #: Continue ``output_dir/name`` from its ``checkpoints/last.ckpt``.
    resume: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    gradcache: GradCacheConfig = field(default_factory=GradCacheConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
