"""Losses: pure functions over embeddings or scores, thin modules, registry entries."""

from contrastlib.losses.functional import cosine_scores, info_nce, soft_cross_entropy
from contrastlib.losses.modules import InfoNCELoss

__all__ = ["InfoNCELoss", "cosine_scores", "info_nce", "soft_cross_entropy"]
