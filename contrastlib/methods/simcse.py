"""SimCSE (Gao, Yao and Chen 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings").

* unsupervised: every sentence is encoded twice in one forward pass; dropout makes the two
  views differ; the other sentences of the batch are the negatives.
* supervised: (anchor, positive[, hard negative]) rows, e.g. NLI entailment and
  contradiction; every other row's positive and negative are negatives too (this is
  sentence-transformers' MultipleNegativesRankingLoss on the same data).

Any registered loss works (it receives ``anchors [B, D]`` and ``candidates [C, D]``), and
so does gradient caching (the base class runs it from :meth:`views` and :meth:`contrast`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from contrastlib.data.collate import TextBatch
from contrastlib.methods.base import ContrastiveModule
from contrastlib.registry import METHODS

Features = dict[str, Tensor]


@METHODS.register("simcse", summary="SimCSE: dropout views (unsupervised) or NLI triplets (supervised)")
class SimCSE(ContrastiveModule):
    def __init__(
        self, encoder: nn.Module, loss: nn.Module, *, mode: str = "supervised", **kwargs: Any
    ) -> None:
        if mode not in ("supervised", "unsupervised"):
            raise ValueError(f"mode must be 'supervised' or 'unsupervised', got {mode!r}")
        hparams = dict(kwargs.pop("hparams", None) or {})
        hparams["mode"] = mode
        super().__init__(encoder, loss, hparams=hparams, **kwargs)
        self.mode = mode

    def views(self, batch: TextBatch) -> list[Features]:  # type: ignore[override]
        if self.mode == "unsupervised":
            # one forward over [x; x]: the two halves get different dropout masks
            return [{k: torch.cat([v, v]) for k, v in batch.columns[0].items()}]
        if len(batch.columns) < 2:
            raise ValueError("supervised SimCSE needs (anchor, positive[, negative]) columns")
        return list(batch.columns)

    def pair(self, embeddings: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``(anchors [B, D], candidates [C, D])`` from the views' embeddings."""
        if self.mode == "unsupervised":
            anchors, positives = embeddings[0].chunk(2)
            return anchors, positives
        return embeddings[0], torch.cat(embeddings[1:])

    def contrast(self, embeddings: list[Tensor], batch: TextBatch) -> Tensor:
        anchors, candidates = self.pair(embeddings)
        if getattr(self.loss_fn, "needs_ids", False):
            loss: Tensor = self.loss_fn(anchors, candidates, ids=batch.ids)
            return loss
        out: Tensor = self.loss_fn(anchors, candidates)
        return out
