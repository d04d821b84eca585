"""The small Lightning base every method shares, and the protocol a method file fills in.

A method is one file in ``methods/``. Besides the training step's two hooks,
:meth:`~ContrastiveModule.views` (the encoder inputs of a batch) and
:meth:`~ContrastiveModule.contrast` (embeddings -> loss), it declares:

* ``Config``: a dataclass, the method's own config section (``method.*``);
* ``inputs``: what its encoder encodes (``"strings"``, ``"images"``: an encoder's own
  ``inputs``), and ``evaluates_as``: what evaluations receive (default: its encoder);
* :meth:`~ContrastiveModule.read_train_data`: how it reads its training file (before any
  model loads), as :class:`TrainData`, which also says what a sampler can be given;
* :meth:`~ContrastiveModule.loss_contract`: what its loss receives
  (:class:`~contrastlib.losses.base.LossContract`);
* :meth:`~ContrastiveModule.collator`: how items become a batch; ``default_sampler``;
* Lightning's own ``configure_callbacks`` and :meth:`~ContrastiveModule.export`.

The pipeline only orchestrates. The base turns ``views``/``contrast`` into a plain step,
or a gradient-cache step under manual optimisation, with no code in the method; every
trainable parameter of the module (encoder, heads outside it, loss temperatures) gets
its gradient either way. Monitors, probes and EMA updates are callbacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import pytorch_lightning as pl
from torch import Tensor, nn

from contrastlib.data.readers import BadRows
from contrastlib.data.sources import Sourced
from contrastlib.encoders.base import Encoder
from contrastlib.losses.base import ContrastiveLoss, LossContract, LossInputs
from contrastlib.losses.sources import SourceLosses
from contrastlib.methods.data import MethodDataModule, NoConfig, TrainData, config_kwargs
from contrastlib.training.gradcache import GradCache, Inputs, embed_length_grouped
from contrastlib.training.monitor import log_source_loss
from contrastlib.training.optim import build_optimizer, planned_steps, warmup_schedule


class ContrastiveModule(pl.LightningModule):
    """Holds ``encoder`` and ``loss``; configures the optimizer with a warm-up schedule.

    Args:
        optimizer: ``adamw`` or ``sgd`` (with ``momentum``).
        grad_cache: run every step through a :class:`GradCache` (manual optimisation:
            the module then does gradient accumulation and clipping itself).
        accumulate_grad_batches, gradient_clip_val: used with ``grad_cache`` (without
            it, the Trainer's own settings apply).
        length_group_rows: encode text views pooled, in length-sorted groups of this many
            rows (see :meth:`embed_views`); None: one forward per view.
        pad_to_multiple_of: round each group's width up to a multiple of this many tokens
            (fewer distinct shapes; see :func:`~contrastlib.training.gradcache.split_rows`).
        hparams: plain data stored in checkpoints (read back with ``weights_only=True``).
        data: the run's prepared :class:`TrainData` (a method that needs it keeps it).
    """

    #: The method's own config section (``method.*``), a dataclass.
    Config: ClassVar[type] = NoConfig
    #: The batch sampler used when ``data.sampler`` is null.
    default_sampler: ClassVar[str] = "random"
    #: What the trained encoder encodes: ``model.encoder`` must be an encoder of these.
    inputs: ClassVar[str]
    #: What :meth:`evaluation_model` is, for the evaluations' ``takes``; None: the
    #: encoder, i.e. an encoder of :attr:`inputs`.
    evaluates_as: ClassVar[str | None] = None
    #: Whether ``data.train`` may name several sources (contrastlib/sources.py).
    several_sources: ClassVar[bool] = False

    def __init__(
        self,
        encoder: Encoder,
        loss: ContrastiveLoss,
        *,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        scheduler: str = "linear",
        optimizer: str = "adamw",
        momentum: float = 0.9,
        grad_cache: GradCache | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        length_group_rows: int | None = None,
        pad_to_multiple_of: int | None = None,
        hparams: dict[str, Any] | None = None,
        data: TrainData | None = None,
    ) -> None:
        super().__init__()
        self.length_group_rows, self.pad_to_multiple_of = length_group_rows, pad_to_multiple_of
        self.encoder: Encoder = encoder
        self.loss_fn: ContrastiveLoss = loss
        self.lr, self.weight_decay = lr, weight_decay
        self.optimizer_name, self.momentum = optimizer, momentum
        self.warmup_ratio, self.scheduler_kind = warmup_ratio, scheduler
        self.grad_cache = grad_cache
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.automatic_optimization = grad_cache is None
        self.save_hyperparameters(
            {
                **(hparams or {}),
                "lr": lr,
                "weight_decay": weight_decay,
                "warmup_ratio": warmup_ratio,
                "scheduler": scheduler,
                "optimizer": optimizer,
            }
        )

    # ------------------------------------------------------------------ the protocol
    @classmethod
    def read_train_data(cls, path: str, config: Any, *, max_rows: int | None = None,
                        bad_rows: BadRows | None = None, columns: Sequence[str] | None = None,
                        prompts: Any = None) -> TrainData:
        """Read the training file (errors name the file and line; ``bad_rows``, the
        ``data.on_bad_row`` policy, decides about malformed rows); no model is loaded."""
        raise NotImplementedError

    @classmethod
    def source_config(cls, config: Any, loss_cls: type[ContrastiveLoss]) -> Any:
        """The config for one source of several whose loss is ``loss_cls`` (default: ``config``)."""
        return config

    @classmethod
    def loss_contract(cls, config: Any, data: TrainData) -> LossContract:
        """What this method gives its loss in a run (compared with the loss's declarations
        before any model loads; :func:`~contrastlib.losses.base.check_loss`)."""
        return LossContract(hard_negatives=data.hard_negatives, views=data.views,
                            who=f"{data.source} ({data.description})")

    @classmethod
    def target(cls) -> str:
        """What evaluations of this method receive (:attr:`evaluates_as`, else its encoder)."""
        return cls.evaluates_as or cls.inputs

    @classmethod
    def check_run(cls, config: Any, run: Any) -> None:
        """Fail before any work if the method's config does not fit the run's (``run`` is
        the whole :class:`~contrastlib.config.schema.RunConfig`)."""

    @classmethod
    def extra_evaluators(cls, data: TrainData, *, batch_size: int, precision: str) -> list[Any]:
        """Evaluators the method adds from its own data (a held-out split)."""
        return []

    @classmethod
    def prepare_train_data(cls, data: TrainData, encoder: Any, config: Any, *, cache_dir: Path, precision: str,
                     batch_size: int, log: Callable[[str], None] = print) -> None:
        """Work on the data that needs the encoder (its tokenizer, frozen embeddings),
        after every check and before the module is built."""

    @classmethod
    def datamodule(
        cls, train: str, config: Any = None, encoder: Encoder | None = None, *, batch_size: int = 64,
        sampler: str | None = None, sampler_options: dict[str, Any] | None = None, num_workers: int = 0, seed: int = 42,
        max_rows: int | None = None, on_bad_row: str = "error", cache_dir: str | Path = "embedding-cache",
        precision: str = "fp32", columns: Sequence[str] | None = None, prompts: Any = None,
    ) -> MethodDataModule:
        """The method's training data as a ``LightningDataModule`` for a Trainer of your own:
        read and checked now; with ``encoder``, prepared for it (a reward method's texts fitted
        to its window and, frozen, embedded). ``config``: the method's ``Config`` (default:
        its defaults); ``sampler``: a registered sampler (default: the method's)."""
        config = cls.Config() if config is None else config
        data = cls.read_train_data(train, config, max_rows=max_rows, bad_rows=BadRows(on_bad_row, key="on_bad_row"),
                                   columns=columns, prompts=prompts)
        if encoder is not None:
            cls.prepare_train_data(data, encoder, config, cache_dir=Path(cache_dir), precision=precision,
                                   batch_size=128)
        return MethodDataModule(data, batch_size=batch_size, sampler=sampler or cls.default_sampler,
                                sampler_options=sampler_options, num_workers=num_workers, seed=seed,
                                embed_precision=precision)

    @classmethod
    def from_config(cls, encoder: Encoder, loss: ContrastiveLoss, config: Any, **common: Any) -> ContrastiveModule:
        """Build the module from its typed ``Config`` and the shared training settings
        (``data``: the prepared :class:`TrainData`, for methods that need it). The config
        goes into the checkpoint's hyper-parameters."""
        method = config_kwargs(config)
        common["hparams"] = {**(common.get("hparams") or {}), "method": method}
        return cls(encoder, loss, **method, **common)

    def evaluation_model(self) -> Any:
        """What evaluators receive (the encoder; a reward method's encoder and head)."""
        return self.encoder

    def collator(self, data: TrainData | None = None) -> Callable[[list[Any]], Any]:
        """Items of ``data.dataset`` -> a batch (``data``: one source of a run on several,
        with its own prompts; None: the module's own data)."""
        raise NotImplementedError

    def export(self, out_dir: Path) -> Path:
        """Write the trained encoder for use outside contrastlib."""
        return Path(self.encoder.save(out_dir))

    def loss_inputs(self, anchors: Tensor, candidates: Tensor | None = None, **available: Tensor | None) -> LossInputs:
        """``LossInputs`` with those of the ``available`` optional fields the loss accepts."""
        accepted = self.loss_fn.accepts
        return LossInputs(anchors, candidates, **{k: v for k, v in available.items() if k in accepted})

    # ------------------------------------------------------------------ method hooks
    def views(self, batch: Any) -> list[Inputs]:
        """The encoder inputs of a batch, one entry per view/column."""
        raise NotImplementedError

    def contrast(self, embeddings: list[Tensor], batch: Any) -> Tensor:
        """Embeddings of every view -> the loss."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        # Lightning keeps submodules' modes as found; evaluation in between may leave the
        # encoder in eval mode, which would switch dropout off for the whole epoch.
        self.encoder.train()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        source = None
        if isinstance(batch, Sourced):  # a run on several sources: this batch's loss and name
            if not isinstance(self.loss_fn, SourceLosses):
                raise TypeError("batches of several sources need a SourceLosses loss (one loss per source)")
            source, batch = self.loss_fn.use_source(batch.source), batch.batch
        views = self.views(batch)
        if self.grad_cache is None:
            loss = self.contrast(self.embed_views(views), batch)
        else:
            loss = self._cached_step(views, batch, batch_idx)
        first = views[0]
        rows = first.shape[0] if isinstance(first, Tensor) else first["input_ids"].shape[0]
        # sync_dist: the logged loss is the mean over ranks, i.e. the global batch's loss
        self.log("train/loss", loss, prog_bar=True, batch_size=int(rows), sync_dist=True)
        if source is not None:
            log_source_loss(self, source, loss)
        return loss

    def embed_views(self, views: list[Inputs]) -> list[Tensor]:
        """Encoder outputs for every view, with their graph: text views pooled, length-sorted
        and encoded in groups of ``length_group_rows`` rows (:func:`embed_length_grouped`)."""
        return embed_length_grouped(self.encoder, views, self.length_group_rows, self.pad_to_multiple_of)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # Parameters a loss updates by its own rule (ATI's per-example temperatures). fp16:
        # Lightning unscaled the optimizer's gradients, not these.
        # (duck typing: Lightning's mixed-precision plugins have a scaler, the others none)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        self.loss_fn.step_own_parameters(grad_scale=float(scaler.get_scale()) if scaler is not None else 1.0)

    def _cached_step(self, views: list[Inputs], batch: Any, batch_idx: int) -> Tensor:
        assert self.grad_cache is not None
        optimizer = cast(Any, self.optimizers())  # one LightningOptimizer
        scheduler = cast(Any, self.lr_schedulers())
        accumulate = self.accumulate_grad_batches
        steps_now = (
            (batch_idx + 1) % accumulate == 0
            or bool(self.trainer.is_last_batch)
            or batch_idx + 1 == self.trainer.num_training_batches
        )
        strategy = self.trainer.strategy
        # (duck typing: Lightning's DDP strategies have block_backward_sync, others none)
        no_sync = getattr(strategy, "block_backward_sync", None) or contextlib.nullcontext
        loss = self.grad_cache.step(
            self.encoder,
            views,
            lambda emb: self.contrast(emb, batch) / accumulate,
            backward=self.manual_backward,
            no_sync=no_sync,
            sync_last=steps_now,
            extra_params=[p for p in self.parameters() if p.requires_grad],
            max_width=self.encoder.max_seq_length,
        )
        if steps_now:
            if self.gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad()
            if scheduler is not None:
                scheduler.step()
        return loss * accumulate

    def own_learning_rates(self) -> list[tuple[list[nn.Parameter], float]]:
        """Parameters trained at a rate of their own (``[(params, lr)]``); default none."""
        return []

    def optimizer_steps(self) -> int:
        """Optimizer steps the run will take (the schedule's length, :func:`planned_steps`)."""
        return planned_steps(self.trainer, automatic=self.automatic_optimization, accumulate=self.accumulate_grad_batches)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(
            self, self.optimizer_name, lr=self.lr, weight_decay=self.weight_decay, momentum=self.momentum,
            exclude=self.loss_fn.own_parameters(), own_lr=self.own_learning_rates(),
        )
        schedule = warmup_schedule(
            optimizer, total_steps=self.optimizer_steps(), warmup_ratio=self.warmup_ratio, kind=self.scheduler_kind
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
