"""Typed configuration: one dataclass per section, loaded by omegaconf in struct mode.

Configs stop at the boundary: :mod:`contrastlib.pipeline` reads them and passes plain
keyword arguments to the parts it builds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

#: Lightning precision names accepted by ``trainer.precision`` ("auto": bf16-mixed where
#: the hardware does bf16 matrix work natively, else 32-true).
TRAINER_PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
ENCODE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "constant", "cosine")
OPTIMIZERS = ("adamw", "sgd")

#: Open sections: ``model``, ``method`` and ``loss`` hold a selector key naming a
#: registered component and that component's own parameters, checked against it.
SECTION_SELECTORS = {"model": "encoder", "method": "name", "loss": "name"}


@dataclass
class DataConfig:
    #: Training data (its format is the method's: see the method's docs): a file, or for
    #: text tuples and scored pairs also a Parquet file, an Arrow file or a folder that
    #: ``datasets``' ``save_to_disk`` wrote (memory-mapped). Or several sources: a mapping
    #: of name -> path, or name -> {path, columns, prompts, loss, weight}
    #: (contrastlib/config/sources.py); every batch then comes from one source.
    train: Any = MISSING
    #: Several sources: ``proportional`` (every batch of every source once per epoch, in a
    #: seeded order) or ``round_robin`` (one batch of each in turn, until the smallest
    #: source's batches are used up), as sentence-transformers names them.
    composition: str = "proportional"
    #: The columns to train on, in role order (anchor, positive, negatives...; scored
    #: pairs: text, text, score), by name, in any format; null: found by their names.
    columns: list[str] | None = None
    #: Text put before every text of a column, in training and in the exported model
    #: (sentence-transformers' prompts): one string for every column, or a mapping of role
    #: (anchor, positive, negative) -> prompt (contrastlib/data/prompts.py).
    prompts: Any = None
    #: Rows per device and step; the global batch is ``batch_size x devices``.
    batch_size: int = 64
    #: A registered batch sampler (``contrastlib list``); null: the method's default.
    sampler: str | None = None
    #: The sampler's own parameters (checked against its signature), e.g. ``m`` for
    #: ``m_per_class`` or ``clusters`` for ``cluster``.
    sampler_options: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0
    #: Drop a global batch shorter than ``batch_size x devices``.
    drop_last: bool = False
    #: Use only the first N rows of the training file (null: all).
    max_rows: int | None = None
    #: A malformed row in the training file: ``error`` (stop, naming file and line) or
    #: ``skip`` (leave it out, count it by reason, report the count at the start of the run).
    on_bad_row: str = "error"


@dataclass
class OptimConfig:
    #: adamw, or sgd (with ``momentum``).
    name: str = "adamw"
    lr: float = 2e-5
    weight_decay: float = 0.01
    momentum: float = 0.9
    warmup_ratio: float = 0.1
    scheduler: str = "linear"


@dataclass
class TrainerConfig:
    max_epochs: int = 1
    #: Stop after this many optimizer steps (-1: run max_epochs).
    max_steps: int = -1
    #: auto: bf16-mixed where the hardware does bf16 matrix work natively (CPUs with AMX
    #: or AVX512-BF16, GPUs with bf16), else 32-true. The run records what it chose.
    precision: str = "auto"
    accelerator: str = "auto"
    devices: str = "auto"
    #: Machines in a multi-node run (torchrun / SLURM; see docs/distributed.md).
    num_nodes: int = 1
    strategy: str = "auto"
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    #: Save checkpoints/last.ckpt every N optimizer steps (and at the end), for resuming.
    checkpoint_every_n_steps: int = 100
    #: Also keep each of those as checkpoints/step-N.ckpt (for evaluating intermediate steps).
    keep_step_checkpoints: bool = False
    #: Encode a batch's text views pooled, in length-sorted groups of this many rows, each
    #: padded to its own longest row (fewer padded tokens, same embeddings); null: one
    #: padded forward per view.
    length_group_rows: int | None = 32
    #: Round each of those groups' (and gradient-cache chunks') width up to a multiple of
    #: this many tokens: a few distinct shapes instead of one per length, which CPU kernels
    #: and the allocator reuse. For long, uneven texts (reward-hh sets 32: memory stopped
    #: growing step after step); on short sentences the extra padding costs a few percent.
    #: Applies where rows are grouped or chunked (length_group_rows, or gradcache.*).
    #: null: each group exactly as wide as its longest row.
    pad_to_multiple_of: int | None = None
    enable_progress_bar: bool = True
    deterministic: bool = False
    #: Under DDP on GPUs, BatchNorm statistics over the global batch (Lightning's
    #: SyncBatchNorm; torch's needs CUDA): SimCLR's "global BN". Off: each rank normalises
    #: its own rows (cheaper; MoCo's shuffle-BN is not provided).
    sync_batchnorm: bool = False


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
    """Settings of the run's evaluations. Every other key of the ``eval`` section names a
    registered evaluation (``contrastlib list``) and lists its entries, e.g.
    ``sts: [dev.tsv, test.tsv]`` or ``knn: [{train: SET, test: SET}]``: each is evaluated
    before and after training (checked against the method, its data read, before any
    model loads). They are kept in :attr:`tasks`."""

    #: Also run every evaluation at the end of every N-th epoch (logged as ``eval/...``,
    #: with ``eval_curve.csv`` and ``plots/eval_curve.png``); null: before and after only.
    every_n_epochs: int | None = None
    batch_size: int = 128
    #: auto: bf16 where training would pick bf16-mixed, else fp32.
    precision: str = "auto"
    #: After training, evaluations that embed labelled sets draw a 2-D map of the test
    #: embeddings coloured by class (``plots/projection-*.png``): ``tsne`` or ``none``.
    projection: str = "tsne"
    #: Points drawn in that map (a class-stratified sample; t-SNE is quadratic).
    projection_points: int = 2000
    #: Encode an evaluation's corpus on other processes or devices (``cpu,cpu``,
    #: ``cuda:1``, a count; contrastlib/pool.py): each round saves the model being
    #: evaluated and the retrieval evaluation's corpus is encoded there through a
    #: temporary embedding cache. null: in the training process.
    devices: str | None = None
    #: ``{evaluation name: [entries]}``: the section's other keys (not written as such).
    tasks: dict[str, Any] = field(default_factory=dict)


#: The keys of the ``eval`` section that are settings, not evaluations.
EVAL_SETTINGS = ("every_n_epochs", "batch_size", "precision", "projection", "projection_points", "devices")
PROJECTIONS = ("tsne", "none")


@dataclass
class RemineConfig:
    """Re-mining during training (ANCE-style): every ``every_n_steps`` optimizer steps the
    rows' negatives are mined again with the model being trained. Needs n-tuple training
    rows ``(anchor, positive, negative_1..k)``, e.g. from ``contrastlib mine
    --output-format n-tuple``. The rules are the miner's (``contrastlib mine --help``)."""

    every_n_steps: int | None = None
    #: More texts to mine from (.txt, one per line, or a BEIR corpus.jsonl) besides the
    #: rows' own positives and negatives.
    corpus: str | None = None
    range_min: int = 0
    range_max: int | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    near_duplicate: float | None = 0.98
    sampling_strategy: str = "top"
    #: k of the logged drift ``remine/overlap@k``.
    drift_k: int = 10

    @property
    def enabled(self) -> bool:
        return self.every_n_steps is not None


@dataclass
class RunConfig:
    #: Modules (``package.module``) or ``.py`` files imported before the config is
    #: checked: a loss, sampler, method, head, encoder or evaluation of your own registers
    #: itself there and can then be named like a shipped one.
    imports: list[str] = field(default_factory=list)
    name: str = "run"
    #: Runs are written to ``output_dir/name`` (``name-2``, ... if it exists and resume is off).
    output_dir: str = "runs"
    seed: int = 42
    #: Continue ``output_dir/name`` from its ``checkpoints/last.ckpt``.
    resume: bool = False
    #: ``encoder`` (a registered encoder: text, image), ``name`` (its model: a Hugging
    #: Face id or dir for text, a timm name for images) and the encoder's own parameters.
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    #: ``name`` (a registered method) and the method's own parameters.
    method: dict[str, Any] = field(default_factory=dict)
    #: ``name`` (a registered loss) and the loss's own parameters (null: its default).
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "info_nce"})
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    gradcache: GradCacheConfig = field(default_factory=GradCacheConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    remine: RemineConfig = field(default_factory=RemineConfig)
