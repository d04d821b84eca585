"""Reward models on embeddings: a preference head (``contrastlib list`` shows them) on a
frozen or fine-tuned text encoder.

* ``method.frozen: true`` (default): every text is embedded once, through the on-disk
  embedding cache (a second run with the same model and data embeds nothing), and only
  the head trains. Fast: an epoch over 7,000 HH-RLHF pairs takes seconds.
* ``method.frozen: false``: the shared TextEncoder is fine-tuned with the head; the
  gradient cache works as for every method (the head receives its gradients), and
  ``method.aux_weight`` adds the run's contrastive ``loss`` on (prompt, chosen,
  rejected) as an auxiliary term.

Data: any format of :mod:`contrastlib.data.preference`, converted to what the head trains
on (a pair is a list of two; a scored list is its ordered pairs; a pair is a thumbs-up and
a thumbs-down). Rows whose prompt hashes below ``method.heldout_fraction`` are held out:
never trained on, evaluated before and after training (``heldout`` in metrics.json), and
used for the reward's normalisation statistics. Every text is fitted to the encoder's
window by ``method.window_policy`` (``keep_final``: the final reply whole, context cut
from the start), and the run prints what that did.

Config section ``method``: ``name: reward``, ``head: {name: bradley_terry, ...}`` and the
keys of :class:`RewardConfig`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastlib.checkpoints import FROZEN_ENCODER_KEY
from contrastlib.data.preference import PreferenceSet
from contrastlib.data.readers import BadRows
from contrastlib.data.windows import POOLS
from contrastlib.errors import ConfigError
from contrastlib.heads.base import RewardHead
from contrastlib.losses.base import LossContract
from contrastlib.methods.base import ContrastiveModule
from contrastlib.methods.data import TrainData, refuse_columns
from contrastlib.methods.reward_batches import (
    RewardBatch,
    RewardCollator,
    RewardTokenize,
    gather_structure,
)
from contrastlib.methods.reward_data import RewardTrainData, prepare_reward_data, read_reward_data
from contrastlib.models.reward import RewardModel
from contrastlib.registry import METHODS

#: Rows whose responses estimate the reward normalisation (mean, std) at export.
NORMALISATION_ROWS = 2048


@dataclass
class RewardConfig:
    #: The preference head: ``name`` (a registered head) and its own parameters.
    head: dict[str, Any] = field(default_factory=lambda: {"name": "bradley_terry"})
    #: Embed once with the encoder frozen (only the head trains), or fine-tune it.
    frozen: bool = True
    #: The training file's format (auto: from its first row's keys).
    format: str = "auto"
    #: Texts longer than the encoder's window: keep_final, drop or raise.
    window_policy: str = "keep_final"
    #: Rows whose prompt hashes below this fraction are held out (0: none).
    heldout_fraction: float = 0.1
    #: Salt of the prompt hash (another salt, another split).
    split_salt: str = ""
    #: Weight of the run's contrastive ``loss`` on (prompt, chosen, rejected) embeddings
    #: (fine-tuning only; 0: off).
    aux_weight: float = 0.0
    #: Learning rate of the head when the encoder is fine-tuned (null: ``optim.lr``): a
    #: fresh head learns at rates that would wreck a pretrained encoder.
    head_lr: float | None = None
    #: What the embedding pools: ``text`` (every token of context + reply); ``reply``
    #: (the encoder reads the whole text, and only the final reply's tokens are pooled:
    #: the context, shared by the responses compared, no longer dilutes their
    #: difference); ``reply_context`` (the reply's pool and the context's pool side by
    #: side, 2x the encoder's dimension: an MLP head can then weigh the reply by the kind
    #: of request, e.g. a refusal after a harmful one).
    pool: str = "text"


@METHODS.register("reward", summary="reward model: a preference head on a frozen or fine-tuned text encoder")
class RewardMethod(ContrastiveModule):
    Config = RewardConfig
    inputs = "strings"
    evaluates_as = "reward_model"

    def __init__(
        self, encoder: Any, loss: Any, *, data: RewardTrainData, head: dict[str, Any] | None = None,
        frozen: bool = True, aux_weight: float = 0.0, window_policy: str = "keep_final",
        head_lr: float | None = None, pool: str = "text", **kwargs: Any,
    ) -> None:
        for read_already in ("format", "heldout_fraction", "split_salt"):  # used by read_train_data
            kwargs.pop(read_already, None)
        super().__init__(encoder, loss, **kwargs)
        enc: Any = encoder
        self.head_name = (head or {}).get("name", "bradley_terry")
        self.head_kwargs = dict(data.head_kwargs)
        extra = {"num_users": len(data.users)} if data.head_cls.per_user else {}
        width = 2 if POOLS[pool].get("pool_context") else 1  # reply_context: two pools side by side
        self.head: RewardHead = data.head_cls(enc.dim * width, **self.head_kwargs, **extra)
        self.frozen, self.aux_weight, self.head_lr = frozen, aux_weight, head_lr
        self.window_policy, self.pool = window_policy, pool
        self.data = data
        self.eval_precision, self.eval_batch_size = data.eval_precision, data.eval_batch_size
        self._memo: dict[str, Tensor] = {}  # frozen: evaluation texts embedded once per run
        self._frozen_fp: str | None = None
        if frozen:
            assert data.embeddings is not None
            encoder.requires_grad_(False)
            self.register_buffer("table", data.embeddings, persistent=False)

    table: Tensor

    # ------------------------------------------------------------------ checkpoints
    def _frozen_fingerprint(self) -> str:
        if self._frozen_fp is None:
            self._frozen_fp = self.encoder.weights_fingerprint()  # it never changes: hashed once
        return self._frozen_fp

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A frozen encoder is the base model, unchanged: the checkpoint keeps its
        fingerprint instead of its weights (all-MiniLM-L6-v2: 90 MB less per save)."""
        if self.frozen:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith("encoder.")]:
                del state[key]
            checkpoint[FROZEN_ENCODER_KEY] = self._frozen_fingerprint()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the frozen encoder's weights back, after checking it is the same model."""
        saved = checkpoint.get(FROZEN_ENCODER_KEY)
        if saved is None:
            return
        if not self.frozen:
            raise ConfigError("method.frozen: the checkpoint is from a frozen-encoder run; it cannot resume fine-tuning")
        if saved != self._frozen_fingerprint():
            raise ConfigError(
                "model: the checkpoint was trained on another frozen encoder than this config loads "
                "(its weights or settings differ)"
            )
        state = checkpoint["state_dict"]
        for key, value in self.encoder.state_dict().items():
            state.setdefault(f"encoder.{key}", value)

    # ------------------------------------------------------------------ protocol
    @classmethod
    def read_train_data(cls, path: str, config: Any, *, max_rows: int | None = None,
                        bad_rows: BadRows | None = None, columns: Sequence[str] | None = None,
                        prompts: Any = None) -> RewardTrainData:
        """``data.on_bad_row: skip``: bad rows are skipped and counted."""
        refuse_columns(columns, "the reward method reads preference rows by their format's keys", prompts)
        return read_reward_data(path, config, max_rows=max_rows, bad_rows=bad_rows)

    @classmethod
    def check_run(cls, config: Any, run: Any) -> None:
        if config.frozen and run.gradcache.enabled:
            raise ConfigError("gradcache: a frozen encoder has no gradients to cache; set method.frozen=false or drop gradcache")
        if config.frozen and run.model.get("lora") is not None:
            raise ConfigError("model.lora: a frozen encoder trains no adapters; set method.frozen=false or drop model.lora")

    @classmethod
    def loss_contract(cls, config: Any, data: TrainData) -> LossContract:
        # the loss is only the auxiliary term, on (prompt, [chosen; rejected])
        return LossContract(hard_negatives=True, used=config.aux_weight > 0, who="the reward method's auxiliary loss")

    @classmethod
    def extra_evaluators(cls, data: TrainData, *, batch_size: int, precision: str) -> list[Any]:
        from contrastlib.evaluation.reward import RewardEvaluator

        assert isinstance(data, RewardTrainData)
        if not data.heldout or data.preferences is None:
            return []
        kind = "lists" if data.preferences.kind == "lists" else data.preferences.kind
        held = PreferenceSet("pairs" if kind == "lists" else kind, data.heldout, f"{data.source} (held out)")
        return [RewardEvaluator("heldout", held)]

    @classmethod
    def prepare_train_data(cls, data: TrainData, encoder: Any, config: Any, *, cache_dir: Path, precision: str,
                           batch_size: int, log: Callable[[str], None] = print) -> None:
        """Fit texts to the window, number them, and (frozen) embed them through the cache."""
        prepare_reward_data(data, encoder, config, cache_dir=cache_dir, precision=precision, batch_size=batch_size,
                            log=log)

    def own_learning_rates(self) -> list[tuple[list[nn.Parameter], float]]:
        return [] if self.head_lr is None else [(list(self.head.parameters()), self.head_lr)]

    def collator(self, data: Any = None) -> RewardCollator:
        enc: Any = self.encoder
        assert self.data.encoded is not None and self.data.table is not None
        tokenize = None if self.frozen else RewardTokenize(enc.tokenizer, enc.max_seq_length, self.pool)
        return RewardCollator(self.data.encoded, self.data.table.texts, tokenize, with_prompts=self.aux_weight > 0)

    def on_train_epoch_start(self) -> None:
        # evaluation (before training, or the monitor's after an epoch) leaves the head in
        # eval mode, which would switch a head's dropout off for the epoch
        self.head.train()
        if self.frozen:
            self.encoder.eval()
        else:
            super().on_train_epoch_start()

    # ------------------------------------------------------------------ step
    def views(self, batch: RewardBatch) -> list[Any]:
        return [batch.view]

    def embed_views(self, views: list[Any]) -> list[Tensor]:
        if self.frozen:
            return [self.table[views[0]]]
        # the base encodes in length-sorted groups of trainer.length_group_rows rows, each
        # padded to its own longest: the same embeddings with less padding
        return super().embed_views(views)

    def contrast(self, embeddings: list[Tensor], batch: RewardBatch) -> Tensor:
        emb = embeddings[0]
        loss = self.head.loss(gather_structure(batch.structure, emb))
        if self.aux_weight and batch.prompts is not None and batch.structure.kind == "pairs":
            s = batch.structure
            assert s.chosen is not None and s.rejected is not None
            # reply_context: the reply's half only (a prompt's first half is its whole pool); a
            # response's context half is nearly the prompt's own, a shortcut for the loss
            part = emb[:, : emb.shape[1] // 2] if self.pool == "reply_context" else emb
            aux = self.loss_fn(part[batch.prompts], torch.cat([part[s.chosen], part[s.rejected]]))
            self.log("train/aux_loss", aux.detach(), batch_size=len(s.chosen))
            loss = loss + self.aux_weight * aux
        return loss

    # ------------------------------------------------------------------ outputs
    def evaluation_model(self) -> RewardModel:
        lookup = None
        if self.frozen and self.data.table is not None:
            lookup = ({t: i for i, t in enumerate(self.data.table.texts)}, self.table.cpu())
        return RewardModel(self.encoder, self.head, users=self.data.users, window_policy=self.window_policy,
                           pool=self.pool, precision=self.eval_precision, batch_size=self.eval_batch_size, lookup=lookup,
                           memo=self._memo if self.frozen else None)

    def normalisation(self, model: RewardModel) -> tuple[float, float]:
        """Mean and standard deviation of the reward over the held-out responses (the
        training responses when nothing is held out), from at most
        :data:`NORMALISATION_ROWS` rows (encoding every training response of a large set
        again at the end of a run would cost a fifth of an epoch)."""
        if not self.head.scalar:
            return 0.0, 1.0
        rows = list(self.data.heldout or self.data.rows)
        if len(rows) > NORMALISATION_ROWS:  # a fixed, seeded sample: the mean and std to ~2%
            rows = random.Random(0).sample(rows, NORMALISATION_ROWS)
        texts = [t for t in model.fit_texts([r.prompt for r in rows for _ in r.responses],
                                            [x for r in rows for x in r.responses]) if t is not None]
        rewards = torch.cat([model.rewards(texts[i : i + 4096]) for i in range(0, len(texts), 4096)])
        std = float(rewards.std()) if len(rewards) > 1 else 1.0
        return float(rewards.mean()), std if std > 0 and math.isfinite(std) else 1.0

    def export(self, out_dir: Path) -> Path:
        model = self.evaluation_model()
        model.mean, model.std = self.normalisation(model)
        return model.save(out_dir, head_name=self.head_name, head_kwargs=self.head_kwargs)


__all__ = ["RewardConfig", "RewardMethod", "RewardModel"]
