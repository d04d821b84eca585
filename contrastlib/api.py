"""The Python entry point that runs exactly what ``contrastlib fit`` runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from contrastlib.config.load import load_config
from contrastlib.pipeline import FitResult
from contrastlib.pipeline import fit as run_fit
from contrastlib.utils.quiet import quiet_third_party


def fit(config: str | Path | Mapping[str, Any], *, log: Callable[[str], None] = print, **overrides: Any) -> FitResult:
    """Train ``config`` (a recipe name, a YAML path, or a mapping of the same keys) with
    ``overrides`` as keyword arguments: a section as a mapping
    (``trainer={"max_steps": 10}``) or a dotted key (``**{"trainer.max_steps": 10}``).
    Bad input raises :class:`~contrastlib.errors.ContrastlibError` before any work;
    returns the run's :class:`~contrastlib.pipeline.FitResult` (its directory, the
    evaluations before and after, steps, seconds)."""
    quiet_third_party()
    return run_fit(load_config(config, values=overrides), log=log)
