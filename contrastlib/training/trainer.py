"""Lightning Trainer setup for a run directory: checkpoints, CSV and TensorBoard logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger


def build_trainer(
    run_dir: Path,
    *,
    max_epochs: int,
    max_steps: int,
    precision: str,
    accelerator: str,
    devices: str,
    strategy: str,
    num_nodes: int = 1,
    gradient_clip_val: float | None,
    accumulate_grad_batches: int,
    log_every_n_steps: int,
    checkpoint_every_n_steps: int,
    enable_progress_bar: bool,
    keep_step_checkpoints: bool = False,
    deterministic: bool,
    sync_batchnorm: bool = False,
    extra_callbacks: list[pl.Callback] | None = None,
    log_version: str = "",
    plugins: list[Any] | None = None,
) -> pl.Trainer:
    """A Trainer writing into ``run_dir``. ``log_version`` names a sub-folder of
    ``logs/`` and ``tensorboard/`` (a resumed run gets its own, so that Lightning's CSV
    logger never overwrites the earlier run's ``metrics.csv``)."""
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="step-{step}",
        auto_insert_metric_name=False,
        save_last=True,
        save_top_k=-1 if keep_step_checkpoints else 0,
        every_n_train_steps=checkpoint_every_n_steps,
    )
    loggers: list[Any] = [
        CSVLogger(run_dir, name="logs", version=log_version),
        TensorBoardLogger(run_dir, name="tensorboard", version=log_version, default_hp_metric=False),
    ]
    dev: int | str = int(devices) if devices.isdigit() else devices
    return pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=max_epochs,
        max_steps=max_steps,
        precision=precision,  # type: ignore[arg-type]
        accelerator=accelerator,
        devices=dev,
        num_nodes=num_nodes,
        strategy=strategy,
        gradient_clip_val=gradient_clip_val,
        accumulate_grad_batches=accumulate_grad_batches,
        log_every_n_steps=log_every_n_steps,
        enable_progress_bar=enable_progress_bar,
        deterministic=deterministic,
        sync_batchnorm=sync_batchnorm,
        callbacks=[checkpoint, LearningRateMonitor("step"), *(extra_callbacks or [])],
        logger=loggers,
        # Our batch samplers shard by rank themselves (exact, equal batch counts).
        use_distributed_sampler=False,
        enable_model_summary=False,
        plugins=plugins,
    )
