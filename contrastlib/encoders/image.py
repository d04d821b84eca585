"""ImageEncoder: any timm backbone with its classifier removed, plus an optional projection head."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlib.encoders.base import Encoder
from contrastlib.registry import ENCODERS
from contrastlib.utils.modes import eval_mode

#: ``--model`` specs an image encoder claims: a fresh timm backbone, or raw pixels.
TIMM_PREFIX, PIXELS = "timm:", "pixels"


class ProjectionHead(nn.Sequential):
    """MLP ``in -> hidden... -> out`` with BatchNorm + ReLU between layers (SimCLR/MoCo v2 head)."""

    def __init__(self, dims: Sequence[int], batch_norm: bool = True) -> None:
        if len(dims) < 2:
            raise ValueError(f"a projection head needs at least [in, out] dims, got {list(dims)}")
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(pairwise(dims)):
            last = i == len(dims) - 2
            layers.append(nn.Linear(d_in, d_out, bias=last or not batch_norm))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _cifar_stem(model: nn.Module, name: str) -> None:
    """A plain ResNet stem becomes one 3x3 stride-1 convolution; a deep stem (timm's
    ``resnet*d`` / ``*t``: three 3x3 convolutions) keeps its convolutions with the first
    one's stride set to 1. The max pool goes either way."""
    children = dict(model.named_children())
    conv = children.get("conv1")
    if "maxpool" not in children or not isinstance(conv, (nn.Conv2d, nn.Sequential)):
        raise ValueError(f"cifar_stem: {name!r} has no ResNet stem (conv1 + maxpool) to replace")
    if isinstance(conv, nn.Conv2d):
        model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=False)
    else:
        first = next(m for m in conv.modules() if isinstance(m, nn.Conv2d))
        first.stride = (1, 1)
    model.maxpool = nn.Identity()


@ENCODERS.register("image", summary="timm backbone (num_classes=0) + optional projection head")
class ImageEncoder(Encoder):
    """Image encoder over ``timm.create_model(backbone, num_classes=0)``.

    Args:
        backbone: any timm model name (``timm.list_models()``).
        pretrained: load timm's pretrained weights (needs them cached or a network).
        projection: hidden and output sizes of a projection head, e.g. ``[2048, 128]``;
            empty for none. The input size is the backbone's feature size.
        projection_batch_norm: BatchNorm between the head's layers (SimCLR, MoCo v2/v3);
            off: Linear + ReLU only (MoCo v1-style heads, or a model without BatchNorm).
        normalize: L2-normalise the output.
        weights: optional local ``.safetensors`` file with backbone weights.
        cifar_stem: for 32 px inputs, replace a ResNet's 7x7 stride-2 stem and its max
            pool with a 3x3 stride-1 convolution (SimCLR's CIFAR variant): without it a
            32 px image is 8x8 after the stem and 1x1 before the last stage.
        channels_last: keep the backbone's weights and its inputs in the channels-last
            memory layout (NHWC), which oneDNN and cuDNN convolutions run faster in: a
            ResNet-18 SimCLR step at 32 px is ~10% faster on a 2-core CPU under bf16
            (``scripts/bench_vision.py``). The values are the same; exported weights are
            written contiguous.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``in_chans``).

    ``input_size`` and ``input_channels`` record the images a method trained it on (set
    by the method; saved with it): evaluations read images at that size by default.
    """

    inputs = "images"
    kind = "image"

    def __init__(
        self,
        backbone: str = "resnet18",
        *,
        pretrained: bool = False,
        projection: Sequence[int] = (),
        projection_batch_norm: bool = True,
        normalize: bool = False,
        weights: str | Path | None = None,
        cifar_stem: bool = False,
        channels_last: bool = True,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        import timm

        self._spec = {"backbone": backbone, "projection": list(projection), "projection_batch_norm": projection_batch_norm,
                      "normalize": normalize, "cifar_stem": cifar_stem, "channels_last": channels_last, **timm_kwargs}
        self.input_size: int | None = None
        self.input_channels = 3

        self.backbone = timm.create_model(backbone, pretrained=pretrained, num_classes=0, **timm_kwargs)
        if cifar_stem:
            _cifar_stem(self.backbone, backbone)
        if weights is not None:
            from safetensors.torch import load_file

            self.backbone.load_state_dict(load_file(str(weights)), strict=False)
        self.feature_dim = int(cast(int, self.backbone.num_features))
        self.head: nn.Module = (
            ProjectionHead([self.feature_dim, *projection], batch_norm=projection_batch_norm) if projection
            else nn.Identity()
        )
        self.dim = int(projection[-1]) if projection else self.feature_dim
        self.normalize = normalize
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    @classmethod
    def check_arguments(cls, name: str, **kwargs: Any) -> None:
        """Cheap checks of config values, run before any model is built (``model.*`` keys)."""
        import difflib

        import timm

        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            raise ValueError(
                f"model.name: {name!r} is not a timm model" + (f"; did you mean {', '.join(close)}?" if close else "")
            )
        projection = kwargs.get("projection") or ()
        if not all(isinstance(d, int) and d > 0 for d in projection):
            raise ValueError(f"model.projection: sizes must be positive integers, got {list(projection)}")
        weights = kwargs.get("weights")
        if weights is not None and not Path(weights).is_file():
            raise ValueError(f"model.weights: no such file: {weights}")

    def features(self, images: Tensor) -> Tensor:
        """Backbone features ``[B, F]`` (what linear probes and kNN monitors read)."""
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def forward(self, images: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, dim]``."""
        z = self.head(self.features(images))
        return F.normalize(z.float(), dim=-1) if self.normalize else z

    @torch.inference_mode()
    def encode(
        self, items: Sequence[Any], /, *, batch_size: int = 256, precision: str = "fp32",
        show_progress_bar: bool | None = None, convert_to_numpy: bool = True,
    ) -> Any:
        """``[N, dim]`` float32 embeddings of images: a ``[N, C, H, W]`` tensor, or any
        sequence of ``[C, H, W]`` tensors (read ``batch_size`` at a time)."""
        from tqdm.auto import tqdm

        from contrastlib.utils.precision import autocast_context

        starts = range(0, len(items), batch_size)
        out = []
        with eval_mode(self), autocast_context(self.device, precision):
            for i in tqdm(starts, desc="encode images", disable=not show_progress_bar):
                chunk = items[i : i + batch_size]
                batch = chunk if isinstance(chunk, Tensor) else torch.stack([items[j] for j in range(i, min(i + batch_size, len(items)))])
                out.append(self(batch.to(self.device)).float().cpu())
        emb = torch.cat(out) if out else torch.zeros(0, self.dim)
        return emb.numpy() if convert_to_numpy else emb

    def spec_dict(self) -> dict[str, Any]:
        return dict(self._spec)

    def saved_extras(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "input_channels": self.input_channels}

    def restore_extras(self, saved: dict[str, Any]) -> None:
        self.input_size, self.input_channels = saved.get("input_size"), int(saved.get("input_channels") or 3)

    @classmethod
    def claims(cls, spec: str) -> bool:
        return spec.startswith(TIMM_PREFIX) or spec == PIXELS

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> Any:
        """``timm:NAME`` (a fresh, randomly initialised backbone: the floor a method must
        beat; ``overrides`` such as ``cifar_stem`` apply) or ``pixels`` (raw pixels)."""
        if spec == PIXELS:
            return PixelEncoder()
        cls.check_arguments(spec[len(TIMM_PREFIX):])
        return cls(spec[len(TIMM_PREFIX):], **overrides)


class PixelEncoder(nn.Module):
    """Raw pixels as the embedding: the floor any learned encoder has to beat."""

    inputs = "images"
    input_size: int | None = None
    input_channels = 3

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def features(self, x: Tensor) -> Tensor:
        return x.flatten(1)
