"""Image sets as training and evaluation items: augmented views per image (seeded per
epoch and row), the views collator, and images through one deterministic transform."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from contrastlib.data.images import ImageSet


@dataclass
class ImageBatch:
    """``views [V, B, C, H, W]`` (V augmented views of B images), dataset ids ``[B]`` and
    labels ``[B]`` (-1 where the set has none)."""

    views: Any
    ids: Any
    labels: Any

    def to(self, device: Any) -> ImageBatch:
        return ImageBatch(self.views.to(device), self.ids.to(device), self.labels.to(device))


class ViewsDataset:
    """``n_views`` random augmentations of each image (run in DataLoader workers).

    With a ``seed``, item ``epoch * len(self) + i`` (what a batch sampler with
    ``tag_epoch`` yields, for data that declares ``epoch_indexed``) is image ``i``'s views for that epoch, drawn from a generator
    seeded by ``(seed, epoch, i)`` alone: the same views whichever worker makes them, how
    many workers there are, and whether the run was resumed. Without a seed, views come
    from the process's random state.
    """

    def __init__(self, images: ImageSet, transform: Any, n_views: int = 2, *, seed: int | None = None) -> None:
        self.images, self.transform, self.n_views, self.seed = images, transform, n_views, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, k: int) -> tuple[int, Any, int]:
        import torch

        epoch, i = divmod(int(k), len(self.images))
        img = self.images.image(i)
        if self.seed is None:
            views = torch.stack([self.transform(img) for _ in range(self.n_views)])
        else:
            # torchvision's transforms draw from the global torch generator: fork it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(hash((self.seed, epoch, i)) & 0x7FFF_FFFF_FFFF_FFFF)
                views = torch.stack([self.transform(img) for _ in range(self.n_views)])
        label = self.images.labels[i] if self.images.labels is not None else -1
        return i, views, label


def collate_views(items: Sequence[tuple[int, Any, int]]) -> ImageBatch:
    import torch

    views = torch.stack([v for _, v, _ in items], dim=1)  # [V, B, C, H, W]
    return ImageBatch(views, torch.tensor([i for i, _, _ in items]), torch.tensor([y for _, _, y in items]))


class TransformedImages:
    """Images through one deterministic transform, with their labels (evaluation)."""

    def __init__(self, images: ImageSet, transform: Any) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        label = self.images.labels[i] if self.images.labels is not None else -1
        return self.transform(self.images.image(i)), label
