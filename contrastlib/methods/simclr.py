"""SimCLR (Chen, Kornblith, Norouzi and Hinton 2020, "A Simple Framework for
Contrastive Learning of Visual Representations"), and multi-view InfoNCE.

Each image is augmented ``views`` times in the DataLoader workers; the encoder (a timm
backbone with a projection head, ``model.projection``) embeds every view, and the loss
contrasts them: NT-Xent for two views (each view against the other 2B - 1), or a
multi-view loss (``mv_info_nce``, ``mv_dhel``) for more. The other images of the global
batch are the negatives (gathered across devices under DDP).

Config section ``method``: ``name: simclr``, ``views`` (2), ``augment`` (the recipe and
its overrides, :mod:`contrastlib.data.augment`), ``online_probe``. Training data: any image set
(:mod:`contrastlib.data.images`); labels, if present, are
used by evaluations, the online probe and class-grouping samplers (``m_per_class``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from contrastlib.data.image_batches import ImageBatch
from contrastlib.methods.image_views import ImageViewsConfig, ImageViewsMethod
from contrastlib.registry import METHODS


@dataclass
class SimCLRConfig(ImageViewsConfig):
    """``views`` (2: NT-Xent; more: a multi-view loss), ``augment``, ``online_probe``."""


@METHODS.register("simclr", summary="SimCLR: augmented views, projection head, NT-Xent (or a multi-view loss)")
class SimCLR(ImageViewsMethod):
    Config = SimCLRConfig
    default_sampler = "random"

    def contrast(self, embeddings: list[Tensor], batch: ImageBatch) -> Tensor:
        if len(embeddings) == 2:
            out: Tensor = self.loss_fn(self.loss_inputs(embeddings[0], embeddings[1], ids=batch.ids))
            return out
        out = self.loss_fn(self.loss_inputs(torch.stack(embeddings)))
        return out


__all__ = ["SimCLR", "SimCLRConfig"]
