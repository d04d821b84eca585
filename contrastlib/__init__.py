"""contrastlib: contrastive representation learning and embedding reward models on Lightning.

``contrastlib.fit(config, **overrides)`` runs what ``contrastlib fit`` runs; every method is
also a LightningModule of its own (:mod:`contrastlib.methods`) with a ``datamodule``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def fit(config: str | Path | Mapping[str, Any], **overrides: Any) -> Any:
    """Train a recipe, YAML file or mapping as ``contrastlib fit`` does (:func:`contrastlib.api.fit`)."""
    from contrastlib.api import fit as api_fit

    return api_fit(config, **overrides)
