"""Token pooling, always with the attention mask (padding never counts)."""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlib.registry import POOLINGS


@POOLINGS.register("mean", summary="mean of the non-padding token states")
def mean_pooling(hidden: Tensor, mask: Tensor) -> Tensor:
    """``[B, T, H], [B, T] -> [B, H]``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    summed = (hidden * m).sum(dim=1)  # [B, H]
    counts = m.sum(dim=1).clamp_min(1e-9)  # [B, 1]
    return summed / counts


@POOLINGS.register("cls", summary="the first token's state ([CLS]; left padding and prompts skipped)")
def cls_pooling(hidden: Tensor, mask: Tensor) -> Tensor:
    """The first pooled token, as sentence-transformers takes it: ``[CLS]`` under right
    padding, the first real token under left padding, the first after the prompt with
    ``include_prompt: false``."""
    first = mask.long().argmax(dim=1)  # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


@POOLINGS.register("last", summary="the last non-padding token (left or right padding)")
def last_token_pooling(hidden: Tensor, mask: Tensor) -> Tensor:
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # [B, T]
    last = (positions * mask.long()).argmax(dim=1)  # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@POOLINGS.register("max", summary="element-wise max over the non-padding tokens")
def max_pooling(hidden: Tensor, mask: Tensor) -> Tensor:
    filled = hidden.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min)
    return filled.max(dim=1).values


def pool(name: str, hidden: Tensor, mask: Tensor) -> Tensor:
    return POOLINGS.get(name)(hidden, mask)
