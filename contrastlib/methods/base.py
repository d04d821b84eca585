"""The small Lightning base every method shares: an encoder, a loss, the optimizer.

Method-specific logic lives in the method's own file; monitors, probes and EMA updates
are callbacks, not base-class features.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from contrastlib.training.optim import adamw_param_groups, warmup_schedule


class ContrastiveModule(pl.LightningModule):
    """Holds ``encoder`` and ``loss``; configures AdamW with a warm-up schedule.

    Subclasses implement ``training_step``. ``hparams`` must be plain data (they are
    stored in checkpoints, which are read back with ``weights_only=True``).
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
        hparams: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss_fn = loss
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_ratio, self.scheduler_kind = warmup_ratio, scheduler
        self.save_hyperparameters(
            {
                **(hparams or {}),
                "lr": lr,
                "weight_decay": weight_decay,
                "warmup_ratio": warmup_ratio,
                "scheduler": scheduler,
            }
        )

    def on_train_epoch_start(self) -> None:
        # Lightning keeps submodules' modes as found; evaluation in between may leave the
        # encoder in eval mode, which would switch dropout off for the whole epoch.
        self.encoder.train()

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(adamw_param_groups(self, self.weight_decay), lr=self.lr)
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_schedule(
            optimizer, total_steps=total, warmup_ratio=self.warmup_ratio, kind=self.scheduler_kind
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
