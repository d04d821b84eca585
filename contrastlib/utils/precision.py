"""Precision: ``auto`` picks bf16 where the hardware does bf16 matrix work natively, else
fp32; ``autocast_context`` runs inference at a named precision (``fp32``, ``bf16``, ``fp16``).

On a CPU with AMX or AVX512-BF16 a bf16 matmul runs several times faster than fp32
(~7x on this project's CI machines, ``docs/benchmarks.md``); without them bf16 is emulated and
slower. On a GPU, bf16 needs compute capability 8.0+ (Ampere and later). The losses run
in fp32 under autocast whatever is chosen (``contrastlib.losses.functional``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_bf16_native() -> tuple[bool, str]:
    """(whether this CPU does bf16 matrix work natively, what was found)."""
    found: list[str] = []
    for name, label in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16")):
        # (duck typing: torch.cpu's private checks exist only in some torch versions)
        check = getattr(torch.cpu, name, None)
        with contextlib.suppress(Exception):
            if check is not None and check():
                found.append(label)
    if not found:  # fall back on the kernel's view of the CPU
        with contextlib.suppress(OSError):
            flags = Path("/proc/cpuinfo").read_text().split()
            found += [label for flag, label in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16")) if flag in flags]
    return bool(found), "+".join(dict.fromkeys(found)) or "no native bf16"


def _uses_cuda(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str = "auto") -> tuple[str, str]:
    """``(Lightning precision, why)`` for ``trainer.precision``; anything but ``auto`` is kept."""
    if precision != "auto":
        return precision, "set in the config"
    if _uses_cuda(accelerator):
        if torch.cuda.is_bf16_supported(including_emulation=False):  # not emulated (pre-Ampere)
            return "bf16-mixed", f"auto: {torch.cuda.get_device_name()} supports bf16"
        return "32-true", f"auto: {torch.cuda.get_device_name()} has no bf16"
    native, what = cpu_bf16_native()
    return ("bf16-mixed", f"auto: CPU with {what}") if native else ("32-true", f"auto: CPU with {what}")


def auto_encode_precision(precision: str) -> str:
    """An encoding precision from the command line: ``auto`` is bf16 where the hardware
    does bf16 matrix work natively, else fp32."""
    return encode_precision(precision, resolve_precision("auto")[0])


def encode_precision(precision: str, trainer_precision: str) -> str:
    """``eval.precision``: ``auto`` follows the training precision (bf16 or fp32)."""
    if precision != "auto":
        return precision
    return "bf16" if trainer_precision.startswith("bf16") else "fp32"
