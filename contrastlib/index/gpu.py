"""Whether FAISS can search on this machine's GPU: faiss-gpu installed, a CUDA device
present, and a tiny search run in a child process (a build without kernels for the GPU
aborts the whole process at its first kernel)."""

from __future__ import annotations

import functools
import subprocess
import sys
from typing import Any


def _faiss() -> Any:
    import faiss

    return faiss


def gpu_available() -> bool:
    """faiss-gpu installed and a CUDA device present."""
    faiss = _faiss()
    # (duck typing: only faiss-gpu builds have GPU resources and get_num_gpus)
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


#: Run in a child process: a tiny exact search on the GPU, checked.
_GPU_PROBE = """
import numpy as np, faiss
index = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), 4)
x = np.eye(4, dtype="float32")
index.add(x)
assert (index.search(x, 1)[1][:, 0] == np.arange(4)).all(), "wrong neighbours"
"""


def probe_gpu() -> tuple[bool, str]:
    """``(works, why)``: search a 4-vector index on the GPU in a child process.

    A FAISS build without kernels for the GPU's architecture passes :func:`gpu_available`
    and then aborts the whole process at its first kernel (the ``faiss-gpu-cu12`` 1.14.1
    wheel on an H200: ``CUDA error 209 no kernel image is available``), so this runs
    where an abort costs nothing."""
    try:
        done = subprocess.run([sys.executable, "-c", _GPU_PROBE], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return False, "a 4-vector faiss-gpu search did not finish in 300 s"
    if done.returncode == 0:
        return True, "faiss-gpu works"
    lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
    why = next((ln for ln in lines if "error" in ln.lower() or "assertion" in ln.lower()),
               lines[-1] if lines else f"exit code {done.returncode}")
    return False, f"faiss-gpu cannot run on this GPU: {why[:300]}"


@functools.cache
def gpu_usable() -> tuple[bool, str]:
    """``(usable, why)``, once per process: :func:`gpu_available` and :func:`probe_gpu`."""
    if not gpu_available():
        return False, "faiss-gpu or a CUDA device is missing"
    return probe_gpu()
