"""The Python entry point that runs exactly what ``contrastlib fit`` runs."""

from __future__ import annotations

import os
import shutil
import sys
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
    ``data.train`` may be a ``datasets.Dataset``: it is saved once under
    ``output_dir/.datasets/`` and read from there memory-mapped.
    Bad input raises :class:`~contrastlib.errors.ContrastlibError` before any work;
    returns the run's :class:`~contrastlib.pipeline.FitResult` (its directory, the
    evaluations before and after, steps, seconds)."""
    quiet_third_party()
    overrides = dict(overrides)
    config, dataset = _take_dataset(config, overrides)
    cfg = load_config(config, values=overrides)
    if dataset is not None:
        cfg.data.train = str(_saved(dataset, Path(cfg.output_dir)))
    return run_fit(cfg, log=log)


def _is_dataset(value: Any) -> bool:
    """A Hugging Face ``datasets.Dataset`` (without importing the library when it is not loaded)."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(value, module.Dataset)


def _take_dataset(config: Any, overrides: dict[str, Any]) -> tuple[Any, Any]:
    """``(config, dataset)``: a ``datasets.Dataset`` given as ``data.train`` (a dotted
    override, a ``data`` override mapping or the config mapping's ``data``) taken out and
    replaced by a placeholder path until it is saved (``overrides`` is changed in place)."""
    placeholder = "<datasets.Dataset>"
    if _is_dataset(overrides.get("data.train")):
        dataset, overrides["data.train"] = overrides["data.train"], placeholder
        return config, dataset
    section = overrides.get("data")
    if isinstance(section, Mapping) and _is_dataset(section.get("train")):
        overrides["data"] = {**section, "train": placeholder}
        return config, section["train"]
    section = config.get("data") if isinstance(config, Mapping) else None
    if isinstance(section, Mapping) and _is_dataset(section.get("train")):
        return {**config, "data": {**section, "train": placeholder}}, section["train"]
    return config, None


def _saved(dataset: Any, output_dir: Path) -> Path:
    """``dataset`` written once with ``save_to_disk`` under ``output_dir/.datasets/``, by
    its fingerprint (the content hash ``datasets`` keeps): the run reads it memory-mapped
    like any Arrow folder, its config names a path, and a resume finds the same rows."""
    target = output_dir / ".datasets" / dataset._fingerprint  # datasets' public-by-convention hash
    if not (target / "state.json").is_file():
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        dataset.save_to_disk(str(tmp))
        if target.exists():  # another process saved it meanwhile
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    return target
