"""SimCLR (Chen, Kornblith, Norouzi and Hinton 2020, "A Simple Framework for
Contrastive Learning of Visual Representations"), and multi-view InfoNCE.

Each image is augmented ``views`` times in the DataLoader workers; the encoder (a timm
backbone with a projection head, ``model.projection``) embeds every view, and the loss
contrasts them: NT-Xent for two views (each view against the other 2B - 1), or a
multi-view loss (``mv_info_nce``, ``mv_dhel``) for more. The other images of the global
batch are the negatives (gathered across devices under DDP).

Config section ``method``: ``name: simclr``, ``views`` (2), ``augment`` (the recipe and
its overrides, :mod:`contrastlib.data.augment`). Training data: any image set
(:mod:`contrastlib.data.images`); labels, if present, are used only by evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from contrastlib.data.augment import augment_config, view_transform
from contrastlib.data.images import ImageBatch, ViewsDataset, collate_views, read_images
from contrastlib.data.readers import BadRows
from contrastlib.errors import ConfigError
from contrastlib.methods.base import ContrastiveModule, TrainData
from contrastlib.registry import METHODS


@dataclass
class SimCLRConfig:
    #: Augmented views per image (2: NT-Xent; more: a multi-view loss).
    views: int = 2
    #: ``recipe`` (simclr, mocov2), ``size`` and any field of AugmentConfig.
    augment: dict[str, Any] = field(default_factory=lambda: {"recipe": "simclr", "size": 32})


def read_view_data(path: str, config: Any, *, max_rows: int | None = None,
                   bad_rows: BadRows | None = None) -> TrainData:
    """An image set as ``views`` augmented views per image (shared by the image methods)."""
    if bad_rows is not None and bad_rows.policy != "error":
        raise ConfigError("data.on_bad_row: skip applies to rows of text files; an image that does not decode "
                          "is always an error (remove it from the set)")
    if config.views < 2:
        raise ConfigError(f"method.views: needs at least 2 views, got {config.views}")
    transform = view_transform(augment_config(dict(config.augment)))  # bad keys fail before reading
    images = read_images(path)
    if max_rows is not None:
        images = images.subset(max_rows)
    return TrainData(
        source=path, rows=images.names, dataset=ViewsDataset(images, transform, config.views),  # type: ignore[arg-type]
        description=f"{len(images)} images, {config.views} augmented views each"
        + (f", {len(images.classes or [])} classes" if images.labels is not None else ""),
    )


@METHODS.register("simclr", summary="SimCLR: augmented views, projection head, NT-Xent (or a multi-view loss)")
class SimCLR(ContrastiveModule):
    Config = SimCLRConfig
    default_sampler = "random"
    evaluations = ("knn", "linear")
    encoders = ("image",)

    def __init__(self, encoder: nn.Module, loss: nn.Module, *, views: int = 2, augment: Any = None, **kwargs: Any) -> None:
        hparams = dict(kwargs.pop("hparams", None) or {})
        hparams["views"] = views
        hparams["augment"] = dict(augment or {})
        super().__init__(encoder, loss, hparams=hparams, **kwargs)
        self.n_views = views

    @classmethod
    def read_train_data(cls, path: str, config: Any, *, max_rows: int | None = None,
                        bad_rows: BadRows | None = None) -> TrainData:
        return read_view_data(path, config, max_rows=max_rows, bad_rows=bad_rows)

    @classmethod
    def check_loss(cls, loss_cls: type, loss_name: str, data: TrainData) -> None:
        views = getattr(data.dataset, "n_views", 2)
        if views > 2 and not getattr(loss_cls, "multi_view", False):
            raise ConfigError(
                f"loss.name: {views} views need a multi-view loss (mv_info_nce, mv_dhel), not {loss_name!r}"
            )

    def collator(self) -> Any:
        return collate_views

    def views(self, batch: ImageBatch) -> list[Tensor]:  # type: ignore[override]
        return list(batch.views.unbind(0))

    def contrast(self, embeddings: list[Tensor], batch: ImageBatch) -> Tensor:
        if len(embeddings) == 2:
            out: Tensor = self.loss_fn(embeddings[0], embeddings[1])
            return out
        import torch

        out = self.loss_fn(torch.stack(embeddings))
        return out
