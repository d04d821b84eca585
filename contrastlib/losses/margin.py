"""Triplet / margin losses, on the same similarity objects as the softmax losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlib.losses.base import ContrastiveLoss, LossInputs, pair_form
from contrastlib.losses.functional import full_precision
from contrastlib.losses.functional import upcast as _f
from contrastlib.registry import LOSSES


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


# ---------------------------------------------------------------------------- module
@LOSSES.register("triplet", summary="triplet margin: d(a,p) - d(a,n) + margin; batch-hard without negatives")
class TripletLoss(ContrastiveLoss):
    """Triplet loss on cosine or euclidean distance. Candidates ``[p; n]``, or ``[p]`` alone,
    in which case each anchor's negative is the closest other positive (batch-hard)."""

    def __init__(self, *, margin: float = 0.5, metric: str = "cosine", gather_distributed: bool = True) -> None:
        super().__init__(gather_distributed=gather_distributed)
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")
        self.margin, self.metric = margin, metric

    def compute(self, x: LossInputs) -> Tensor:
        anchors, candidates = pair_form(x, "triplet")
        b = anchors.shape[0]
        positives = candidates[:b]
        if candidates.shape[0] >= 2 * b:
            negatives = candidates[b : 2 * b]
        else:
            rank, _ = self._world()
            negatives = hardest_in_batch_negatives(anchors, self._gather(positives), self.metric, offset=rank * b)
        return triplet_margin(anchors, positives, negatives, margin=self.margin, metric=self.metric)
