"""MoCo v2 and v3: a momentum (EMA) copy of the encoder gives the keys.

* **v2** (Chen, Fan, Girshick and He 2020, "Improved Baselines with Momentum Contrastive
  Learning"; He et al. 2020, "Momentum Contrast"): the query is view 1 through the
  encoder, its key view 2 through the momentum encoder; the negatives are a queue of the
  keys of earlier steps (not this batch's other keys). After each optimizer step the
  momentum encoder takes ``k <- m k + (1 - m) q`` and the step's
  keys, gathered from every device, replace the oldest in the queue. So the queue never
  holds the current batch's keys while the loss runs, and under DDP every rank holds the
  same queue.
* **v3** (Chen, Xie and He 2021, "An Empirical Study of Training Self-Supervised Vision
  Transformers"): no queue; a predictor head on the query side; the loss is symmetric,
  ``2 tau (ctr(p1, k2) + ctr(p2, k1))`` with the other keys of the global batch as
  negatives; the momentum rises from ``key_momentum`` to ``key_momentum_end`` on a cosine.

Shuffle-BN (MoCo, section 3.3): under DDP each rank's BatchNorm normalises its own rows,
so a query and its key, normalised with the same rank's statistics, can match through
those statistics instead of their content. The key encoder therefore runs on a random
shuffle of the global batch's key images (each rank takes a slice), and the keys are put
back in order. The permutation comes from a generator seeded by the global step, the
same on every rank without a message, and the same after a resume. ``shuffle_bn``:
``auto`` (when the key encoder has BatchNorm), ``true`` (always under DDP), ``false``.
On one process it does nothing: the whole batch is one BatchNorm batch.

The queue, its pointer and the momentum encoder are buffers and submodules: checkpoints
hold them, and the momentum schedule is a function of the global step, so a resumed run
continues exactly (lightly's memory bank restarts from random vectors after a resume).

Config section ``method``: ``name: moco``, ``version`` (2 or 3), ``queue_size``,
``key_momentum``, ``key_momentum_end``, ``predictor`` (v3 hidden size), ``shuffle_bn``, ``views`` (2),
``augment`` (as SimCLR; MoCo v2's recipe is ``augment.recipe: mocov2``), ``online_probe``.
The loss is ``info_nce``, whose temperature is MoCo's tau: v2 needs a loss that takes a
queue (``extra_negatives``) and an ``exclude_mask``, v3 any loss with a temperature.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from contrastlib.data.image_batches import ImageBatch
from contrastlib.data.readers import BadRows
from contrastlib.encoders.image import ProjectionHead
from contrastlib.errors import ConfigError
from contrastlib.losses.base import LossContract
from contrastlib.losses.distributed import gather_no_grad, world_info
from contrastlib.methods.data import TrainData
from contrastlib.methods.image_views import ImageViewsConfig, ImageViewsMethod
from contrastlib.registry import METHODS

#: ``method.shuffle_bn`` choices.
SHUFFLE_BN = ("auto", True, False)


@dataclass
class MoCoConfig(ImageViewsConfig):
    #: 2: queue of keys, one direction; 3: no queue, predictor, symmetric loss.
    version: int = 2
    #: Keys kept as negatives (v2).
    queue_size: int = 4096
    #: EMA coefficient of the momentum encoder (at the start, for v3's schedule).
    key_momentum: float = 0.99
    #: Cosine schedule from ``key_momentum`` to this over the run (v3: 1.0); null: constant.
    key_momentum_end: float | None = None
    #: Hidden size of v3's predictor MLP (its output is the projection's size).
    predictor: int = 512
    #: Shuffle the key images across ranks under DDP: auto (when the key encoder has
    #: BatchNorm), true, false.
    shuffle_bn: Any = "auto"
    augment: dict[str, Any] = field(default_factory=lambda: {"recipe": "mocov2", "size": 32})


def check_moco(version: int, queue_size: int, key_momentum: float, key_momentum_end: float | None,
               shuffle_bn: Any) -> str | None:
    """The first problem with MoCo's own settings, as ``method.KEY: ...``, or None."""
    if version not in (2, 3):
        return f"method.version: must be 2 or 3, got {version}"
    if version == 2 and queue_size < 1:
        return f"method.queue_size: must be >= 1, got {queue_size}"
    if not 0 <= key_momentum <= 1 or (key_momentum_end is not None and not key_momentum <= key_momentum_end <= 1):
        return ("method.key_momentum: key_momentum must lie in [0, 1] and key_momentum_end in [key_momentum, 1], "
                f"got {key_momentum}, {key_momentum_end}")
    if shuffle_bn not in SHUFFLE_BN:
        return f"method.shuffle_bn: must be auto, true or false, got {shuffle_bn!r}"
    return None


def momentum_at(step: int, total: int, start: float, end: float | None) -> float:
    """The EMA coefficient at optimizer step ``step`` of ``total`` (cosine from ``start``
    to ``end``; constant without ``end``)."""
    if end is None or total <= 0:
        return start
    return end - (end - start) * (math.cos(math.pi * min(step, total) / total) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, m: float) -> None:
    """``target <- m * target + (1 - m) * source`` for parameters. Buffers (BatchNorm
    statistics) are not averaged: the key encoder keeps its own, as in MoCo."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(m).add_(s.detach(), alpha=1 - m)


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@torch.no_grad()
def shuffled_forward(net: nn.Module, images: Tensor, seed: int) -> Tensor:
    """``net(images)`` with the rows of the global batch shuffled across ranks first
    (MoCo's shuffle-BN): every rank gathers every rank's ``images`` (equal shapes, rank
    order), takes its slice of one permutation drawn from ``seed`` (the same on every
    rank), runs ``net`` on it, and the outputs are gathered and put back in order; each
    rank returns the rows of its own ``images``. Without a process group: ``net(images)``."""
    rank, world = world_info()
    if world == 1:
        out: Tensor = net(images)
        return out
    everything = gather_no_grad(images.contiguous())
    b = images.shape[0]
    perm = torch.randperm(world * b, generator=torch.Generator().manual_seed(seed)).to(images.device)
    shuffled = gather_no_grad(net(everything[perm[rank * b : (rank + 1) * b]]).contiguous())
    restored = torch.empty_like(shuffled)
    restored[perm] = shuffled
    return restored[rank * b : (rank + 1) * b]


@METHODS.register("moco", summary="MoCo v2 (momentum encoder + queue) and v3 (predictor, symmetric, no queue)")
class MoCo(ImageViewsMethod):
    Config = MoCoConfig
    default_sampler = "random"
    fixed_views = 2

    def __init__(
        self, encoder: Any, loss: Any, *, version: int = 2, queue_size: int = 4096, key_momentum: float = 0.99,
        key_momentum_end: float | None = None, predictor: int = 512, shuffle_bn: Any = "auto", **kwargs: Any,
    ) -> None:
        problem = check_moco(version, queue_size, key_momentum, key_momentum_end, shuffle_bn)
        if problem:
            raise ValueError(problem)
        kwargs.setdefault("augment", {"recipe": "mocov2", "size": 32})
        super().__init__(encoder, loss, **kwargs)
        self.version, self.key_momentum, self.key_momentum_end = version, key_momentum, key_momentum_end
        self.momentum_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.shuffle_bn = has_batch_norm(self.momentum_encoder) if shuffle_bn == "auto" else bool(shuffle_bn)
        self._key_calls = (-1, 0)  # (global step, key passes in it): seeds shuffle-BN
        dim = int(encoder.dim)
        self.predictor_head = ProjectionHead([dim, predictor, dim]) if version == 3 else None
        if version == 2:
            # the queue's negatives only: this batch's other keys are not MoCo's negatives
            self.loss_fn.gather_distributed = False
            self.register_buffer("queue", nn.functional.normalize(torch.randn(queue_size, dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.queue: Tensor
        self.queue_ptr: Tensor
        self._pending: list[Tensor] = []
        self._stepped_at = -1
        self._total_steps = 0

    # ------------------------------------------------------------------ protocol
    @classmethod
    def read_train_data(cls, path: str, config: Any, *, max_rows: int | None = None,
                        bad_rows: BadRows | None = None, columns: Sequence[str] | None = None,
                        prompts: Any = None) -> TrainData:
        problem = check_moco(config.version, config.queue_size, config.key_momentum, config.key_momentum_end,
                             config.shuffle_bn)
        if problem:
            raise ConfigError(problem)
        return super().read_train_data(path, config, max_rows=max_rows, bad_rows=bad_rows, columns=columns,
                                       prompts=prompts)

    @classmethod
    def loss_contract(cls, config: Any, data: TrainData) -> LossContract:
        who = f"MoCo v{config.version}"
        if config.version == 2:  # the queue is the negatives; a query's own key is excluded from them
            return LossContract(passes=frozenset({"extra_negatives", "exclude_mask"}), scaled=True, who=who)
        return LossContract(scaled=True, who=who)  # v3: 2 tau (ctr(p1, k2) + ctr(p2, k1))

    # ------------------------------------------------------------------ step
    def views(self, batch: ImageBatch) -> list[Tensor]:  # type: ignore[override]
        # v2: only the query view goes through the trained encoder; v3: both
        return [batch.views[0]] if self.version == 2 else list(batch.views.unbind(0))

    @torch.no_grad()
    def keys(self, images: Tensor) -> Tensor:
        self.momentum_encoder.train(self.encoder.training)
        if not (self.shuffle_bn and self.momentum_encoder.training):
            return nn.functional.normalize(self.momentum_encoder(images).float(), dim=1)
        step, calls = self._key_calls
        step, calls = (step, calls + 1) if step == int(self.global_step) else (int(self.global_step), 0)
        self._key_calls = (step, calls)
        seed = (step * 1_000_003 + calls) % (2**63)  # micro-batches and v3's two key passes differ
        return nn.functional.normalize(shuffled_forward(self.momentum_encoder, images, seed).float(), dim=1)

    def contrast(self, embeddings: list[Tensor], batch: ImageBatch) -> Tensor:
        if self.version == 2:
            q = embeddings[0]
            k = self.keys(batch.views[1])
            b = q.shape[0]
            not_own = ~torch.eye(b, dtype=torch.bool, device=q.device)
            loss: Tensor = self.loss_fn(self.loss_inputs(q, k, exclude_mask=not_own, extra_negatives=self.queue))
            if self.training:
                self._pending.append(k)
            return loss
        assert self.predictor_head is not None
        p1, p2 = self.predictor_head(embeddings[0]), self.predictor_head(embeddings[1])
        k1, k2 = self.keys(batch.views[0]), self.keys(batch.views[1])
        temperature: Any = self.loss_fn.temperature  # (declared: the contract asks for a scaled loss)
        tau = float(temperature())
        out: Tensor = 2 * tau * (self.loss_fn(self.loss_inputs(p1, k2)) + self.loss_fn(self.loss_inputs(p2, k1)))
        return out

    # ------------------------------------------------------------------ after each optimizer step
    def current_momentum(self) -> float:
        return momentum_at(int(self.global_step), self._total_steps, self.key_momentum, self.key_momentum_end)

    def on_train_start(self) -> None:
        self._stepped_at = int(self.global_step)  # (a resumed run starts at its step)
        self._total_steps = self.optimizer_steps()

    def configure_callbacks(self) -> list[pl.Callback]:
        return [*super().configure_callbacks(), _AfterOptimizerStep()]

    def after_batch(self) -> None:
        """After each optimizer step: the key encoder's EMA, then this step's keys into the
        queue. Called by :class:`_AfterOptimizerStep`, so it runs before any checkpoint of
        this step is written."""
        if int(self.global_step) == self._stepped_at:
            return  # accumulating: no optimizer step yet, the keys wait
        self._stepped_at = int(self.global_step)
        ema_update(self.momentum_encoder, self.encoder, self.current_momentum())
        if self.version == 2 and self._pending:
            self.enqueue(torch.cat(self._pending))
        self._pending = []

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (gathered from every device, rank order) over the oldest entries."""
        keys = gather_no_grad(keys.contiguous())  # (as is on one process)
        n, size = keys.shape[0], self.queue.shape[0]
        if n >= size:
            keys, n = keys[-size:], size
        ptr = int(self.queue_ptr)
        idx = (torch.arange(n, device=keys.device) + ptr) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % size)


class _AfterOptimizerStep(pl.Callback):
    """Runs :meth:`MoCo.after_batch` at each batch end, before ``ModelCheckpoint`` saves.

    Lightning calls the callbacks' ``on_train_batch_end`` before the module's own, and the
    checkpoint callbacks last of all. As a module hook, a checkpoint saved in the middle of
    an epoch held the queue and key encoder from before its step, so a resume from it lost
    that step's update and diverged (``tests/training/test_resume.py``, ``moco-v2-queue``)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        pl_module.after_batch()  # type: ignore[operator]
