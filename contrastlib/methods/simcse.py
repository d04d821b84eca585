"""SimCSE (Gao, Yao and Chen 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings").

* unsupervised: every sentence is encoded twice in one forward pass; dropout makes the two
  views differ; the other sentences of the batch are the negatives.
* supervised: (anchor, positive[, hard negative]) rows, e.g. NLI entailment and
  contradiction; every other row's positive and negative are negatives too (this is
  sentence-transformers' MultipleNegativesRankingLoss on the same data).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from contrastlib.data.collate import TextBatch
from contrastlib.methods.base import ContrastiveModule
from contrastlib.registry import METHODS

Columns = list[dict[str, Tensor]]  # one tokenised batch per column


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

    def embed_views(self, batch: Columns) -> tuple[Tensor, Tensor]:
        """``(anchors [B, D], candidates [C, D])`` for the loss."""
        if self.mode == "unsupervised":
            features = batch[0]
            doubled = {k: torch.cat([v, v]) for k, v in features.items()}  # [2B, T]
            emb = self.encoder(doubled)  # [2B, D], two dropout masks
            anchors, positives = emb.chunk(2)
            return anchors, positives
        if len(batch) < 2:
            raise ValueError("supervised SimCSE needs (anchor, positive[, negative]) columns")
        anchors = self.encoder(batch[0])  # [B, D]
        candidates = torch.cat([self.encoder(col) for col in batch[1:]])  # [B * (cols - 1), D]
        return anchors, candidates

    def training_step(self, batch: TextBatch, batch_idx: int) -> Tensor:
        anchors, candidates = self.embed_views(batch.columns)
        if getattr(self.loss_fn, "needs_ids", False):
            loss = self.loss_fn(anchors, candidates, ids=batch.ids)
        else:
            loss = self.loss_fn(anchors, candidates)
        self.log("train/loss", loss, prog_bar=True, batch_size=anchors.shape[0])
        return loss
