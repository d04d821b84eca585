"""What a run ran with: contrastlib's commit, package versions, hardware (written into
the run's marker, shown in its report)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from contrastlib import __version__


def git_commit() -> str | None:
    """The commit of contrastlib's source checkout (``+dirty`` if modified), if it is one."""
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{out}+dirty" if dirty else out or None


def versions() -> dict[str, str]:
    out = {"contrastlib": __version__, "python": platform.python_version()}
    for name in ("torch", "pytorch_lightning", "transformers", "sentence_transformers", "timm", "faiss"):
        with contextlib.suppress(Exception):
            out[name] = str(__import__(name).__version__)
    return out


def hardware() -> dict[str, Any]:
    """What the run ran on: CPU model and cores, memory, accelerators, OS."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out: dict[str, Any] = {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform()}
    with contextlib.suppress(ValueError, OSError, AttributeError):
        out["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out
