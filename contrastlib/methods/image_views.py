"""What the image methods (SimCLR, MoCo) share: an image set read as ``views`` augmented
views per image, the views collator, the online linear probe, and the input size the
exported encoder records (evaluations read images at that size by default).

Config keys every image method has (besides its own): ``views``, ``augment`` (the recipe
and its overrides, :mod:`contrastlib.data.augment`) and ``online_probe`` (a linear
classifier on the detached backbone features of each training batch, as solo-learn and
lightly run it; logs ``probe/loss`` and ``probe/top1``; needs labelled training images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytorch_lightning as pl
from torch import Tensor

from contrastlib.data.augment import augment_config, eval_transform, view_transform
from contrastlib.data.image_batches import ImageBatch, ViewsDataset, collate_views
from contrastlib.data.images import ImageSet, read_images
from contrastlib.data.readers import BadRows
from contrastlib.errors import ConfigError
from contrastlib.losses.base import LossContract
from contrastlib.methods.base import ContrastiveModule
from contrastlib.methods.data import TrainData, refuse_columns


@dataclass
class ImageViewsConfig:
    """The keys every image method has."""

    #: Augmented views per image.
    views: int = 2
    #: ``recipe`` (simclr, mocov2), ``size`` and any field of AugmentConfig.
    augment: dict[str, Any] = field(default_factory=lambda: {"recipe": "simclr", "size": 32})
    #: Train a linear classifier on the detached backbone features alongside the run.
    online_probe: bool = False


class AnchorImages(Sequence[Tensor]):
    """Each image once through the evaluation transform at the training size: the anchors a
    sampler that needs embeddings (``cluster``) embeds."""

    def __init__(self, images: ImageSet, size: int, channels: int) -> None:
        self.images, self.transform = images, eval_transform(size, channels=channels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.transform(self.images.image(i))


class ImageViewsMethod(ContrastiveModule):
    """Base of the image methods: data, collator, probe and export (see the module doc)."""

    inputs = "images"
    #: The fewest views the method contrasts; more need a multi-view loss.
    fixed_views: ClassVar[int | None] = None

    def __init__(self, encoder: Any, loss: Any, *, views: int = 2, augment: Any = None, online_probe: bool = False,
                 data: TrainData | None = None, **kwargs: Any) -> None:
        super().__init__(encoder, loss, **kwargs)
        self.n_views = views
        aug = augment_config(dict(augment or {}))
        self.input_size, self.input_channels = aug.size, aug.channels
        # the images it trains on: evaluations read theirs at that size by default
        encoder.input_size, encoder.input_channels = aug.size, aug.channels
        self.probe_classes = _probe_classes(data) if online_probe and data is not None else None

    @classmethod
    def read_train_data(cls, path: str, config: Any, *, max_rows: int | None = None,
                        bad_rows: BadRows | None = None, columns: Sequence[str] | None = None,
                        prompts: Any = None) -> TrainData:
        refuse_columns(columns, "an image method reads image folders and archives", prompts)
        if bad_rows is not None and bad_rows.policy != "error":
            raise ConfigError("data.on_bad_row: skip applies to rows of text files; an image that does not decode "
                              "is always an error (remove it from the set)")
        if config.views < 2:
            raise ConfigError(f"method.views: needs at least 2 views, got {config.views}")
        if cls.fixed_views is not None and config.views != cls.fixed_views:
            raise ConfigError(f"method.views: {cls.__name__} contrasts {cls.fixed_views} views, got {config.views}")
        aug = augment_config(dict(config.augment))  # bad keys fail before reading
        transform = view_transform(aug)
        images = read_images(path)
        if max_rows is not None:
            images = images.subset(max_rows)
        data = TrainData(
            source=path, rows=images.names, dataset=ViewsDataset(images, transform, config.views),  # type: ignore[arg-type]
            description=f"{len(images)} images, {config.views} augmented views each"
            + (f", {len(images.classes or [])} classes" if images.labels is not None else ""),
            views=config.views, labels=images.labels, anchors=AnchorImages(images, aug.size, aug.channels),
            epoch_indexed=True,
        )
        if config.online_probe:
            _probe_classes(data)  # no labels: an error now, not after the model loads
        return data

    @classmethod
    def loss_contract(cls, config: Any, data: TrainData) -> LossContract:
        # dataset ids, for losses with per-example parameters (ATI)
        return LossContract(provides=frozenset({"ids"}), views=data.views, who=f"method {cls.__name__}")

    def collator(self, data: Any = None) -> Any:
        return collate_views

    def views(self, batch: ImageBatch) -> list[Tensor]:  # type: ignore[override]
        return list(batch.views.unbind(0))

    def configure_callbacks(self) -> list[pl.Callback]:
        if not self.probe_classes:
            return []
        from contrastlib.training.monitor import OnlineProbe

        return [OnlineProbe(self.probe_classes)]



def _probe_classes(data: TrainData) -> int:
    if data.labels is None:
        raise ConfigError(
            f"method.online_probe: {data.source} has no labels (class sub-folders or a labels array) to train a probe on"
        )
    return int(max(data.labels)) + 1
