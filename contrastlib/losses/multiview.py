"""Multi-view contrastive losses: N >= 2 views per example, one term per example.

Koromilas et al. 2025, "A Principled Framework for Multi-View Contrastive Learning".
With ``V`` views ``z_v,i`` (L2-normalised) of example ``i`` and ``s = <z, z'> / tau``:

* MV-InfoNCE, one term per (view, example) row::

      l_{v,i} = log sum_{(w,j) != (v,i)} exp s(z_v,i, z_w,j)  -  log sum_{a != b} exp s(z_a,i, z_b,i)

  (every view pair of the example in the numerator, every other row in the
  denominator). With two views it is NT-Xent minus log 2.
* MV-DHEL decouples alignment from uniformity: the denominator keeps only the other
  examples *within each view*, multiplied over views::

      l_i = sum_v log sum_{j != i} exp s(z_v,i, z_v,j)  -  log sum_{a < b} exp s(z_a,i, z_b,i)

Views are ``[V, B, D]``; ``views_all`` (``[V, M, D]``) are the candidates gathered across
devices, local example ``i`` being global ``offset + i``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlib.losses.base import LossInputs, ScaledLoss, two_views
from contrastlib.losses.functional import full_precision, offset_eye
from contrastlib.registry import LOSSES


def _prep(views: Tensor, views_all: Tensor | None, normalize: bool) -> tuple[Tensor, Tensor]:
    if views.dim() != 3 or views.shape[0] < 2:
        raise ValueError(f"views must be [V >= 2, B, D], got {tuple(views.shape)}")
    dtype = torch.float64 if views.dtype == torch.float64 else torch.float32
    z = views.to(dtype)
    z_all = z if views_all is None else views_all.to(dtype)
    if normalize:
        z, z_all = F.normalize(z, dim=-1), F.normalize(z_all, dim=-1)
    return z, z_all


def _positive_lse(z: Tensor, temperature: float | Tensor, pairs: str) -> Tensor:
    """``[B]``: log-sum-exp of the view-pair similarities of each example."""
    v = z.shape[0]
    s = torch.einsum("vbd,wbd->bvw", z, z) / temperature  # [B, V, V]
    keep = torch.ones(v, v, dtype=torch.bool, device=z.device)
    keep = keep.triu(1) if pairs == "upper" else keep & ~torch.eye(v, dtype=torch.bool, device=z.device)
    return torch.logsumexp(s[:, keep], dim=-1)


@full_precision
def mv_info_nce(
    views: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    views_all: Tensor | None = None,
    offset: int = 0,
    normalize: bool = True,
) -> Tensor:
    """MV-InfoNCE over ``[V, B, D]`` views (see module docstring)."""
    z, z_all = _prep(views, views_all, normalize)
    v, b, _ = z.shape
    m = z_all.shape[1]
    scores = torch.einsum("vbd,wmd->vbwm", z, z_all) / temperature  # [V, B, V, M]
    scores = scores.reshape(v * b, v * m)
    self_mask = torch.block_diag(*[offset_eye(b, m, offset, device=z.device)] * v)  # row (v, i) -> (v, offset + i)
    scores = scores.masked_fill(self_mask, torch.finfo(scores.dtype).min)
    denominator = torch.logsumexp(scores, dim=-1).view(v, b)  # [V, B]
    numerator = _positive_lse(z, temperature, "all")  # [B]
    return (denominator - numerator[None, :]).mean()


@full_precision
def mv_dhel(
    views: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    views_all: Tensor | None = None,
    offset: int = 0,
    normalize: bool = True,
) -> Tensor:
    """MV-DHEL over ``[V, B, D]`` views (see module docstring)."""
    z, z_all = _prep(views, views_all, normalize)
    _v, b, _ = z.shape
    m = z_all.shape[1]
    scores = torch.einsum("vbd,vmd->vbm", z, z_all) / temperature  # [V, B, M] within each view
    self_mask = offset_eye(b, m, offset, device=z.device)
    scores = scores.masked_fill(self_mask[None], torch.finfo(scores.dtype).min)
    uniformity = torch.logsumexp(scores, dim=-1).sum(dim=0)  # [B]
    alignment = _positive_lse(z, temperature, "upper")  # [B]
    return (uniformity - alignment).mean()


# ---------------------------------------------------------------------------- modules
class _MultiViewLoss(ScaledLoss):
    name: ClassVar[str]
    hard_negatives = False
    multi_view = True

    def __init__(self, temperature: float = 0.1, *, learnable_temperature: bool = False, gather_distributed: bool = True) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)

    def _views(self, x: LossInputs) -> Tensor:
        if x.candidates is None:
            if x.anchors.dim() != 3:
                raise ValueError(f"{self.name} takes views [V, B, D] or (anchors, candidates)")
            return x.anchors
        return torch.stack(two_views(x, self.name))

    def _gather_views(self, views: Tensor) -> Tensor:
        if self._world()[1] == 1:
            return views
        per_example = views.transpose(0, 1).contiguous()  # [B, V, D]
        return self._gather(per_example).transpose(0, 1)  # [V, W*B, D]


@LOSSES.register("mv_info_nce", summary="MV-InfoNCE: N >= 2 views, one term per example")
class MVInfoNCELoss(_MultiViewLoss):
    """MV-InfoNCE; see :func:`mv_info_nce`. Input ``[V, B, D]`` or two views."""

    name = "mv_info_nce"

    def compute(self, x: LossInputs) -> Tensor:
        views = self._views(x)
        rank, _ = self._world()
        return mv_info_nce(views, temperature=self.temperature(), views_all=self._gather_views(views), offset=rank * views.shape[1])


@LOSSES.register("mv_dhel", summary="MV-DHEL: multi-view, alignment decoupled from uniformity")
class MVDHELLoss(_MultiViewLoss):
    """MV-DHEL; see :func:`mv_dhel`. Input ``[V, B, D]`` or two views."""

    name = "mv_dhel"

    def compute(self, x: LossInputs) -> Tensor:
        views = self._views(x)
        rank, _ = self._world()
        return mv_dhel(views, temperature=self.temperature(), views_all=self._gather_views(views), offset=rank * views.shape[1])
