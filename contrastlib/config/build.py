"""Turn config sections into parts, with explicit keyword arguments."""

from __future__ import annotations

import dataclasses
import inspect

from torch import nn

from contrastlib.config.schema import LossConfig
from contrastlib.errors import ConfigError
from contrastlib.registry import LOSSES

#: Arguments a method supplies itself, never set from the config.
_SUPPLIED = {"num_samples"}


def loss_parameters(name: str) -> list[str]:
    """The config keys loss ``name`` accepts."""
    sig = inspect.signature(LOSSES.get(name).__init__)
    return [p for p in sig.parameters if p not in ("self", *_SUPPLIED)]


def loss_kwargs(cfg: LossConfig) -> dict[str, object]:
    """The non-null loss settings, checked against what the loss takes."""
    accepted = loss_parameters(cfg.name)
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "name" or value is None:
            continue
        if f.name not in accepted:
            raise ConfigError(
                f"loss.{f.name}: not a parameter of loss {cfg.name!r}; it takes: {', '.join(accepted)}"
            )
        kwargs[f.name] = value
    return kwargs


def build_loss(cfg: LossConfig, *, num_samples: int) -> nn.Module:
    cls = LOSSES.get(cfg.name)
    kwargs = loss_kwargs(cfg)
    if "num_samples" in inspect.signature(cls.__init__).parameters:
        kwargs["num_samples"] = num_samples
    try:
        loss: nn.Module = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"loss {cfg.name!r}: {exc}") from None
    return loss
