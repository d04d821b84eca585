"""Helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """A path under ../shared/data; skips the test where it is absent (a user's clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data is only on CI and dev machines)")
    return path


def run_cli(args: list[str], cwd: Path, *, devices: int = 1, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``python -m contrastlib ARGS`` in a fresh process, as a user runs it; ``devices > 1``
    adds Lightning's DDP (gloo processes on CPU). One thread per process: the DDP tests
    compare runs, not speed, and 2 ranks on 2 cores must not oversubscribe them."""
    if devices > 1:
        args = [*args, f"trainer.devices={devices}", "trainer.strategy=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CONTRASTLIB_JOB_DIR", None)
    return subprocess.run([sys.executable, "-m", "contrastlib", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def train_losses(run: Path) -> list[float]:
    """``train/loss`` of a run's CSV log, by step."""
    with open(run / "logs" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/loss")]
    return [float(r["train/loss"]) for r in sorted(rows, key=lambda r: int(r["step"]))]
