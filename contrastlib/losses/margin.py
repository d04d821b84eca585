"""Triplet / margin losses, on the same similarity objects as the softmax losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlib.losses.functional import full_precision
from contrastlib.losses.functional import upcast as _f


@full_precision
def pair_distance(x: Tensor, y: Tensor, metric: str = "cosine") -> Tensor:
    """Row-wise distance ``[N, D] x [N, D] -> [N]``: ``cosine`` (1 - cos) or ``euclidean``."""
    if metric == "cosine":
        return 1 - F.cosine_similarity(_f(x), _f(y), dim=-1)
    if metric == "euclidean":
        return (_f(x) - _f(y)).norm(dim=-1)
    raise ValueError(f"unknown metric {metric!r}; valid: cosine, euclidean")


@full_precision
def triplet_margin(
    anchors: Tensor, positives: Tensor, negatives: Tensor, *, margin: float = 0.5, metric: str = "cosine"
) -> Tensor:
    """``mean relu(d(a, p) - d(a, n) + margin)`` (Schroff et al. 2015, FaceNet)."""
    return F.relu(pair_distance(anchors, positives, metric) - pair_distance(anchors, negatives, metric) + margin).mean()


@full_precision
def hardest_in_batch_negatives(
    anchors: Tensor, pool: Tensor, metric: str = "cosine", *, offset: int = 0
) -> Tensor:
    """For each anchor, the closest pool row other than its own positive (row ``offset + i``):
    batch-hard mining over the positives of the (possibly gathered) batch."""
    if metric == "cosine":
        d = 1 - F.normalize(_f(anchors), dim=-1) @ F.normalize(_f(pool), dim=-1).T
    else:
        d = torch.cdist(_f(anchors), _f(pool))
    idx = torch.arange(anchors.shape[0], device=d.device)
    d = d.index_put((idx, offset + idx), torch.tensor(float("inf"), dtype=d.dtype, device=d.device))
    return pool[d.argmin(dim=1)]
