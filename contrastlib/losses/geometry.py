"""Alignment and uniformity (Wang and Isola 2020, "Understanding Contrastive Representation
Learning through Alignment and Uniformity on the Hypersphere"): losses and metrics alike."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlib.losses.base import ContrastiveLoss, LossInputs, two_views
from contrastlib.losses.functional import full_precision
from contrastlib.losses.functional import upcast as _f
from contrastlib.registry import LOSSES


@full_precision
def alignment(x: Tensor, y: Tensor, *, alpha: float = 2.0, normalize: bool = True) -> Tensor:
    """``E ||x_i - y_i||^alpha`` over positive pairs ``[N, D] x [N, D]`` (lower is better)."""
    if normalize:
        x, y = F.normalize(_f(x), dim=-1), F.normalize(_f(y), dim=-1)
    return (x - y).norm(dim=1).pow(alpha).mean()


@full_precision
def uniformity(x: Tensor, *, t: float = 2.0, normalize: bool = True) -> Tensor:
    """``log E_{i<j} exp(-t ||x_i - x_j||^2)`` over ``[N, D]`` (lower is more uniform)."""
    if normalize:
        x = F.normalize(_f(x), dim=-1)
    sq = torch.pdist(x).pow(2)  # [N (N - 1) / 2]
    return torch.logsumexp(-t * sq, dim=0) - torch.log(torch.tensor(float(sq.numel()), dtype=sq.dtype))


@full_precision
def align_uniform(x: Tensor, y: Tensor, *, lam: float = 1.0, alpha: float = 2.0, t: float = 2.0) -> Tensor:
    """Wang and Isola's training loss: ``alignment + lam * (uniformity(x) + uniformity(y)) / 2``."""
    return alignment(x, y, alpha=alpha) + lam * (uniformity(x, t=t) + uniformity(y, t=t)) / 2


# ---------------------------------------------------------------------------- module
@LOSSES.register("align_uniform", summary="alignment + uniformity on the hypersphere (Wang & Isola)")
class AlignUniformLoss(ContrastiveLoss):
    """``alignment(a, p) + lam * (uniformity(a) + uniformity(p)) / 2``; uniformity over all devices."""

    hard_negatives = False

    def __init__(self, *, lam: float = 1.0, alpha: float = 2.0, t: float = 2.0, gather_distributed: bool = True) -> None:
        super().__init__(gather_distributed=gather_distributed)
        self.lam, self.alpha, self.t = lam, alpha, t

    def compute(self, x: LossInputs) -> Tensor:
        anchors, positives = two_views(x, "align_uniform")
        if self._world()[1] == 1:
            return align_uniform(anchors, positives, lam=self.lam, alpha=self.alpha, t=self.t)
        uni = (uniformity(self._gather(anchors), t=self.t) + uniformity(self._gather(positives), t=self.t)) / 2
        return alignment(anchors, positives, alpha=self.alpha) + self.lam * uni
