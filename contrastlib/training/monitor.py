"""Monitors that run alongside training: evaluations every N epochs, and an online
linear probe.

* :class:`EvalMonitor` runs the run's evaluators (kNN, linear probe, STS, retrieval; any
  object called with the encoder that returns ``{metric: value}``) at the end of every
  N-th epoch on rank 0, logs them to CSV and TensorBoard as ``eval/<set>/<metric>``, and
  rewrites ``eval_curve.csv`` and ``plots/eval_curve.png`` each time. Its history is in
  the checkpoint, so a resumed run's curve continues.
* :class:`OnlineProbe` trains a linear classifier on the detached backbone features of
  each training batch (the first view), as solo-learn and lightly do, and logs its loss
  and its accuracy on the training batches. It reads the features the step already
  computed (a forward hook on the backbone) instead of running the backbone again, and
  under DDP it gathers features and labels from every rank, so that every rank trains
  the same probe on the global batch. Its weights and optimizer state are in the
  checkpoint.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from contrastlib.losses.distributed import gather_no_grad
from contrastlib.utils.io import atomic_path

CURVE_FIELDS = ("epoch", "step", "name", "metric", "value")


class EvalMonitor(pl.Callback):
    """Evaluate every ``every_n_epochs`` epochs (rank 0) and keep the curve.

    Args:
        evaluators: objects with ``name``, ``main_metric`` and ``__call__(encoder)``.
        every_n_epochs: evaluate after epochs N, 2N, ... (and always after the last).
        run_dir: where ``eval_curve.csv`` and ``plots/eval_curve.png`` go.
        initial: metrics before training (epoch 0 of the curve).
    """

    def __init__(self, evaluators: Sequence[Any], every_n_epochs: int, run_dir: str | Path,
                 initial: dict[str, dict[str, float]] | None = None) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.evaluators, self.every = list(evaluators), every_n_epochs
        self.run_dir = Path(run_dir)
        self.history: list[dict[str, Any]] = []
        self.last_step = -1
        self.last_metrics: dict[str, dict[str, float]] = {}
        if initial:
            self._record(0, 0, initial)

    def _record(self, epoch: int, step: int, metrics: dict[str, dict[str, float]]) -> None:
        for name, values in metrics.items():
            for metric, value in values.items():
                self.history.append({"epoch": epoch, "step": step, "name": name, "metric": metric, "value": float(value)})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = int(trainer.current_epoch) + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if epoch % self.every and not last:
            return
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        from contrastlib.evaluation.base import run_evaluations

        metrics = run_evaluations(self.evaluators, pl_module.evaluation_model())  # type: ignore[operator]
        step = int(trainer.global_step)
        self._record(epoch, step, metrics)
        self.last_step, self.last_metrics = step, metrics
        flat = {f"eval/{name}/{m}": float(v) for name, vals in metrics.items() for m, v in vals.items()}
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=step)
        self.write()

    def write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(self.history)
        with atomic_path(self.run_dir / "eval_curve.csv") as tmp:
            tmp.write_text(buf.getvalue())
        from contrastlib.evaluation.plots import plot_curves

        plot_curves(self.run_dir / "plots" / "eval_curve.png", self.history,
                    {e.name: e.main_metric for e in self.evaluators})

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


class OnlineProbe(pl.Callback):
    """A linear classifier on detached backbone features, trained on every batch.

    Args:
        num_classes: classes of the training labels.
        lr: the probe's own Adam learning rate (the encoder's optimizer never sees it).

    It reads the output of the image encoder's ``backbone`` (before any projection head).
    """

    def __init__(self, num_classes: int, *, lr: float = 1e-3) -> None:
        self.num_classes, self.lr = num_classes, lr
        self.head: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._captured: list[Tensor] = []
        self._hook: Any = None

    def _target(self, pl_module: pl.LightningModule) -> nn.Module:
        encoder: Any = pl_module.encoder  # an image method's ImageEncoder
        module: nn.Module = encoder.backbone
        return module

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        encoder: Any = pl_module.encoder
        dim = int(encoder.feature_dim)
        self.head = nn.Linear(dim, self.num_classes).to(pl_module.device)
        # zeros (a convex problem needs no random start): the same probe on every rank and
        # in every run, and no draw from the global random state the training uses
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=self.lr)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.head is not None
        self.head.to(pl_module.device)
        self._hook = self._target(pl_module).register_forward_hook(self._capture)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _capture(self, module: nn.Module, args: Any, output: Any) -> None:
        if module.training and isinstance(output, Tensor):
            self._captured.append(output.detach())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._captured = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        assert self.head is not None and self.optimizer is not None
        labels: Tensor = batch.labels
        rows = int(labels.shape[0])
        # the first view's rows are the first ``rows`` the backbone saw this step (whole,
        # or in gradient-cache chunks, in order)
        seen = torch.cat(self._captured) if self._captured else None
        self._captured = []
        if seen is None or seen.shape[0] < rows:
            with torch.no_grad():
                seen = self._target(pl_module)(batch.views[0])
        x = seen[:rows].float()
        x, labels = gather_no_grad(x.contiguous()), gather_no_grad(labels.contiguous())  # (as is on one process)
        with torch.enable_grad():
            logits = self.head(x)
            loss = nn.functional.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        top1 = 100.0 * float((logits.argmax(1) == labels).float().mean())
        # every rank holds the same values (the global batch): no sync needed. The epoch
        # value is the batch-size-weighted mean: the accuracy over the epoch's batches.
        pl_module.log("probe/loss", loss.detach(), on_step=True, on_epoch=False, batch_size=len(labels))
        pl_module.log("probe/top1", top1, on_step=False, on_epoch=True, batch_size=len(labels))

    def state_dict(self) -> dict[str, Any]:
        if self.head is None or self.optimizer is None:
            return {}
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks after their setup(), so head and optimizer exist
        if not state_dict:
            return
        assert self.head is not None and self.optimizer is not None
        self.head.load_state_dict(state_dict["head"])
        self.optimizer.load_state_dict(state_dict["optimizer"])


def monitor_callbacks(
    evaluators: Sequence[Any], *, every_n_epochs: int | None, run_dir: Path, initial: dict[str, dict[str, float]],
) -> list[pl.Callback]:
    """The monitors a run's ``eval`` section asks for."""
    if every_n_epochs and evaluators:
        return [EvalMonitor(evaluators, every_n_epochs, run_dir, initial)]
    return []


def log_source_loss(module: Any, source: str, loss: Tensor) -> None:
    """``train/loss/SOURCE`` (unweighted) of a run on several sources, at the steps that
    trained on that source. Not through ``self.log``: Lightning logs a key's last value
    again at every step after it was first logged. Every rank's rows are of this step's
    source (a global batch is one source's), so the mean over ranks is a collective every
    rank reaches."""
    losses = module.loss_fn
    value = loss.detach() / losses.weights[losses.source]
    value = module.trainer.strategy.reduce(value, reduce_op="mean")
    if module.trainer.is_global_zero:
        for logger in module.loggers:
            logger.log_metrics({f"train/loss/{source}": float(value)}, step=module.global_step)
