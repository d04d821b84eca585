"""The small Lightning base every method shares: an encoder, a loss, the optimizer, and
the training step (plain, or with a gradient cache).

A method says only what is specific to it: :meth:`views` (the encoder inputs of a batch)
and :meth:`contrast` (embeddings -> loss). The base turns that into a plain step, or a
gradient-cache step under manual optimisation, with no code in the method. Monitors,
probes and EMA updates are callbacks, not base-class features.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from contrastlib.training.gradcache import GradCache, Inputs
from contrastlib.training.optim import adamw_param_groups, warmup_schedule


class ContrastiveModule(pl.LightningModule):
    """Holds ``encoder`` and ``loss``; configures AdamW with a warm-up schedule.

    Args:
        grad_cache: run every step through a :class:`GradCache` (manual optimisation:
            the module then does gradient accumulation and clipping itself).
        accumulate_grad_batches, gradient_clip_val: used with ``grad_cache`` (without
            it, the Trainer's own settings apply).
        hparams: plain data stored in checkpoints (read back with ``weights_only=True``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module,
        *,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        scheduler: str = "linear",
        grad_cache: GradCache | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss_fn = loss
        self.lr, self.weight_decay = lr, weight_decay
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
            }
        )

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
        views = self.views(batch)
        if self.grad_cache is None:
            loss = self.contrast([self.encoder(v) for v in views], batch)
        else:
            loss = self._cached_step(views, batch, batch_idx)
        first = views[0]
        rows = first.shape[0] if isinstance(first, Tensor) else first["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=int(rows))
        return loss

    def _cached_step(self, views: list[Inputs], batch: Any, batch_idx: int) -> Tensor:
        assert self.grad_cache is not None
        optimizer = cast(Any, self.optimizers())  # one LightningOptimizer
        scheduler = cast(Any, self.lr_schedulers())
        accumulate = self.accumulate_grad_batches
        steps_now = (batch_idx + 1) % accumulate == 0 or bool(self.trainer.is_last_batch)
        strategy = self.trainer.strategy
        no_sync = getattr(strategy, "block_backward_sync", None) or contextlib.nullcontext
        loss = self.grad_cache.step(
            self.encoder,
            views,
            lambda emb: self.contrast(emb, batch) / accumulate,
            backward=self.manual_backward,
            no_sync=no_sync,
            sync_last=steps_now,
            loss_params=list(self.loss_fn.parameters()),
        )
        if steps_now:
            if self.gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad()
            if scheduler is not None:
                scheduler.step()
        return loss * accumulate

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(adamw_param_groups(self, self.weight_decay), lr=self.lr)
        total = int(self.trainer.estimated_stepping_batches)
        if not self.automatic_optimization:
            total = -(-total // self.accumulate_grad_batches)
        schedule = warmup_schedule(
            optimizer, total_steps=total, warmup_ratio=self.warmup_ratio, kind=self.scheduler_kind
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
