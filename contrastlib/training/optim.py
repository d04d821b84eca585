"""Optimizer and learning-rate schedule shared by all methods."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "bn")


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Weight decay on matrices only: not on biases or normalisation weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or any(tag in name for tag in _NO_DECAY):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float, kind: str
) -> LambdaLR:
    """Linear warm-up, then ``linear`` decay to zero, ``cosine`` decay, or ``constant``."""
    total = max(1, total_steps)
    warmup = int(total * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return LambdaLR(optimizer, factor)
