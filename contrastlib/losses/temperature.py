"""Temperatures: fixed, or learnable global (CLIP's clamped logit scale). Per-example
temperatures live with ATI (:mod:`contrastlib.losses.ati`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Temperature(nn.Module):
    """A temperature ``tau``, fixed or learnable.

    Learnable temperatures are stored as a logit scale ``log(1 / tau)`` (Radford et al.
    2021, CLIP) and clamped to ``[min_temperature, max_temperature]`` when read, so that a
    too-eager optimiser cannot blow the softmax up (CLIP clamps the scale at 100).
    """

    def __init__(
        self,
        init: float = 0.07,
        *,
        learnable: bool = False,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if init <= 0:
            raise ValueError(f"temperature must be > 0, got {init}")
        self.learnable = learnable
        self.init = float(init)
        self.min_temperature, self.max_temperature = min_temperature, max_temperature
        log_scale = torch.tensor(math.log(1.0 / init))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale, persistent=False)

    def forward(self) -> Tensor | float:
        """The temperature: an exact float when fixed, a differentiable 0-d tensor when learnable."""
        if not self.learnable:
            return self.init
        lo, hi = math.log(1.0 / self.max_temperature), math.log(1.0 / self.min_temperature)
        return torch.exp(-self.log_scale.clamp(lo, hi))

    def extra_repr(self) -> str:
        return f"tau={float(self()):.4g}, learnable={self.learnable}"

    def set_(self, value: float) -> None:
        """Set the temperature (both the float and the logit scale)."""
        self.init = float(value)
        with torch.no_grad():
            self.log_scale.fill_(math.log(1.0 / value))
