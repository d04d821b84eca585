"""Autocast for inference at a named precision (``fp32``, ``bf16``, ``fp16``)."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)
