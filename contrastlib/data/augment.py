"""View augmentations for the image methods, on ``torchvision.transforms.v2``.

Two recipes, each sized by the crop ``size`` (32 for CIFAR, 224 for ImageNet):

* ``simclr`` (Chen et al. 2020, appendix A): random resized crop (scale 0.08-1), flip,
  colour jitter (0.8s, 0.8s, 0.8s, 0.2s) with p 0.8, grayscale with p 0.2, Gaussian
  blur with p 0.5 (kernel 10% of the size, sigma 0.1-2);
* ``mocov2`` (Chen et al. 2020, "Improved Baselines with Momentum Contrastive
  Learning"): crop scale 0.2-1, colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8,
  grayscale p 0.2, blur p 0.5, flip.

Blur is left out below ``min_blur_size`` pixels (32 px CIFAR recipes drop it: a kernel of
3 pixels only smears). Every field is a config key (``method.augment.*``); the result is
a picklable callable, so it runs in DataLoader workers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

#: Per-channel statistics (ImageNet's, as timm and the peers use).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: One-channel (grey) inputs: the mean of the three ImageNet statistics.
GREY_MEAN, GREY_STD = (0.449,), (0.226,)


def default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation mean and std for ``channels`` (ImageNet's, or their grey average)."""
    return (GREY_MEAN, GREY_STD) if channels == 1 else (IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class AugmentConfig:
    """One view's augmentation. ``recipe`` sets the defaults; any field overrides."""

    recipe: str = "simclr"
    size: int = 32
    min_scale: float = 0.08
    max_scale: float = 1.0
    hflip: float = 0.5
    jitter_prob: float = 0.8
    jitter_strength: float = 1.0
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale: float = 0.2
    blur_prob: float = 0.5
    #: Blur only when ``size`` is at least this.
    min_blur_size: int = 64
    sigma_min: float = 0.1
    sigma_max: float = 2.0
    #: Channels the model sees (3: grayscale inputs are repeated; 1: colour is averaged).
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


RECIPES: dict[str, dict[str, Any]] = {
    "simclr": {},
    "mocov2": {"min_scale": 0.2, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
}


def augment_config(options: dict[str, Any] | None = None) -> AugmentConfig:
    """The recipe named by ``options['recipe']`` with ``options``' other fields over it;
    unknown keys and recipes are one-line errors naming the key."""
    from contrastlib.errors import ConfigError

    options = dict(options or {})
    recipe = options.get("recipe", "simclr")
    if recipe not in RECIPES:
        raise ConfigError(f"method.augment.recipe: unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    names = {f.name for f in fields(AugmentConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"method.augment.{unknown[0]}: unknown key; valid: {', '.join(sorted(names))}")
    for key in ("mean", "std"):
        if key in options:
            options[key] = tuple(float(v) for v in options[key])
    merged = {**RECIPES[recipe], **options}
    if merged.get("channels") == 1:  # grey statistics unless the user gave their own
        grey_mean, grey_std = default_stats(1)
        merged.setdefault("mean", grey_mean)
        merged.setdefault("std", grey_std)
    cfg = replace(AugmentConfig(), **merged)
    if cfg.size < 1 or not 0 < cfg.min_scale <= cfg.max_scale <= 1:
        raise ConfigError(f"method.augment: size must be >= 1 and 0 < min_scale <= max_scale <= 1, got {asdict(cfg)}")
    if cfg.channels not in (1, 3) or len(cfg.mean) != cfg.channels or len(cfg.std) != cfg.channels:
        raise ConfigError(f"method.augment: channels {cfg.channels} needs {cfg.channels} mean and std values")
    return cfg


def view_transform(cfg: AugmentConfig) -> Any:
    """PIL image -> ``[C, size, size]`` float tensor: one random view.

    The crop, flip, jitter and grey steps run on the PIL image (torchvision v2 transforms
    take PIL inputs; PIL's enhancers are several times faster than the same operations on
    small uint8 tensors), and the image becomes a tensor only for the dtype and the
    normalisation. Tensor inputs work as well (every step accepts them)."""
    from torchvision.transforms import v2

    s = cfg.jitter_strength
    steps: list[Any] = [
        _Mode(cfg.channels),
        v2.RandomResizedCrop(cfg.size, scale=(cfg.min_scale, cfg.max_scale), antialias=True),
        v2.RandomHorizontalFlip(cfg.hflip),
    ]
    if cfg.jitter_prob > 0 and cfg.channels == 3:
        jitter = v2.ColorJitter(cfg.brightness * s, cfg.contrast * s, cfg.saturation * s, cfg.hue * s)
        steps.append(v2.RandomApply([jitter], p=cfg.jitter_prob))
    if cfg.grayscale > 0 and cfg.channels == 3:
        steps.append(v2.RandomGrayscale(cfg.grayscale))
    if cfg.blur_prob > 0 and cfg.size >= cfg.min_blur_size:
        kernel = max(3, cfg.size // 20 * 2 + 1)  # odd, about 10% of the size
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(cfg.sigma_min, cfg.sigma_max))], p=cfg.blur_prob))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    return v2.Compose(steps)


def eval_transform(size: int, *, channels: int = 3, mean: tuple[float, ...] | None = None,
                   std: tuple[float, ...] | None = None) -> Any:
    """Evaluation: resize the short side to ``size`` (as the peers do for CIFAR: no crop
    at 32 px; a centre crop of 87.5% above), then normalise (by default with
    :func:`default_stats` for ``channels``)."""
    from torchvision.transforms import v2

    mean = mean or default_stats(channels)[0]
    std = std or default_stats(channels)[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"{channels} channel(s) need {channels} mean and std values, got {mean}, {std}")

    steps: list[Any] = [_Mode(channels), v2.ToImage()]
    if size <= 64:
        steps.append(v2.Resize((size, size), antialias=True))
    else:
        steps += [v2.Resize(round(size / 0.875), antialias=True), v2.CenterCrop(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class _Channels(torch.nn.Module):
    """Grayscale to 3 channels (repeated) or colour to 1 (ITU-R 601 luma)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] == self.channels:
            return x
        if self.channels == 3:
            return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).clone()
        w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(3, 1, 1)
        return (x.float() * w).sum(dim=-3, keepdim=True).round().clamp(0, 255).to(x.dtype)


class _Mode(torch.nn.Module):
    """A PIL image in RGB (3 channels) or L (1; ITU-R 601 luma, PIL's conversion); a
    tensor through :class:`_Channels` (the same rule)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.tensor = _Channels(channels)

    def forward(self, img: Any) -> Any:
        if isinstance(img, torch.Tensor):
            return self.tensor(img)
        mode = "RGB" if self.channels == 3 else "L"
        return img if img.mode == mode else img.convert(mode)
