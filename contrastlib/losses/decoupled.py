"""InfoNCE variants that change the negative term.

* DCL / DCLW (Yeh et al. 2022, "Decoupled Contrastive Learning"): the positive is removed
  from the denominator; DCLW weights the positive term with the negative von Mises-Fisher
  weight ``w_i = 2 - N softmax_i(<z0_i, z1_i> / sigma)``.
* Debiased (Chuang et al. 2020, "Debiased Contrastive Learning"): the negative term is
  corrected for same-class "negatives" with class prior ``tau_plus``.
* Hardness-weighted (Robinson et al. 2021, "Contrastive Learning with Hard Negative
  Samples"): negatives re-weighted by ``exp(beta * logit)``; composes with the debiased form.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlib.losses.base import LossInputs, ScaledLoss, pair_form
from contrastlib.losses.distributed import place_local_block
from contrastlib.losses.functional import cosine_scores, full_precision, offset_eye, upcast
from contrastlib.registry import LOSSES


@full_precision
def negative_von_mises_fisher_weights(z0: Tensor, z1: Tensor, sigma: float = 0.5) -> Tensor:
    """DCLW weights ``[N]``: ``2 - N softmax(<z0_i, z1_i> / sigma)`` over the N examples.

    The weights are constants for the backward pass (no gradient flows through them), as
    in lightly's DCLWLoss.
    """
    sim = (z0.detach() * z1.detach()).sum(dim=-1) / sigma  # [N]
    return 2 - z0.shape[0] * torch.softmax(sim, dim=0)


@full_precision
def dcl(
    z0: Tensor,
    z1: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    sigma: float | None = None,
    weights: Tensor | None = None,
    z0_all: Tensor | None = None,
    z1_all: Tensor | None = None,
    offset: int = 0,
    extra_negatives: Tensor | None = None,
) -> Tensor:
    """Decoupled contrastive loss, symmetric over the two views (DCLW when ``sigma`` is set).

    For view ``a`` of example ``i`` with its pair ``b``::

        l_i = -w_i <a_i, b_i> / tau + log sum_{j != i} [exp(<a_i, a_j>/tau) + exp(<a_i, b_j>/tau)]

    Args:
        z0, z1: ``[B, D]`` the two views (normalised here).
        sigma: DCLW's weighting temperature; ``None`` gives DCL (``w = 1``). Weights are
            computed over the global batch, so DDP equals single-process training.
        weights: ``[B]`` positive-term weights given explicitly (overrides ``sigma``).
        z0_all, z1_all: ``[M, D]`` views from all devices (default: local).
        extra_negatives: ``[K, D]`` more negatives for the ``z0`` direction (e.g. NLI hard
            negatives).
    """
    z0, z1 = F.normalize(upcast(z0), dim=-1), F.normalize(upcast(z1), dim=-1)
    z0_all = z0 if z0_all is None else F.normalize(z0_all.to(z0.dtype), dim=-1)
    z1_all = z1 if z1_all is None else F.normalize(z1_all.to(z0.dtype), dim=-1)
    b, m = z0.shape[0], z0_all.shape[0]
    diag = offset_eye(b, m, offset, device=z0.device)
    if weights is None:
        weights = (
            negative_von_mises_fisher_weights(z0_all, z1_all, sigma)[offset : offset + b]
            if sigma is not None
            else torch.ones(b, dtype=z0.dtype, device=z0.device)
        )

    def one_way(a: Tensor, a_all: Tensor, b_all: Tensor, extra: Tensor | None) -> Tensor:
        s_aa = a @ a_all.T / temperature  # [B, M]
        s_ab = a @ b_all.T / temperature  # [B, M]
        positive = s_ab[diag]  # [B]
        negatives = [s_aa[~diag].view(b, m - 1), s_ab[~diag].view(b, m - 1)]
        if extra is not None:
            negatives.append(cosine_scores(a, extra) / temperature)
        negative = torch.logsumexp(torch.cat(negatives, dim=1), dim=1)  # [B]
        return (-weights * positive + negative).mean()

    return 0.5 * (one_way(z0, z0_all, z1_all, extra_negatives) + one_way(z1, z1_all, z0_all, None))


@full_precision
def debiased_info_nce(
    anchors: Tensor,
    candidates: Tensor,
    *,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 0.0,
    positive_index: Tensor | None = None,
    exclude_mask: Tensor | None = None,
) -> Tensor:
    """Debiased (``tau_plus``) and hardness-weighted (``beta``) InfoNCE.

    With positive logit ``p = s_i+ / tau`` and negative logits ``n_k`` (every candidate but
    the positive and the excluded), ``N`` of them::

        w_k = N softmax_k(beta * n_k)                     (w = 1 when beta = 0)
        Ng  = max( (sum_k w_k e^{n_k} - tau_plus N e^{p}) / (1 - tau_plus),  N e^{-1/tau} )
        l   = -log( e^p / (e^p + Ng) )

    ``tau_plus = beta = 0`` is plain InfoNCE. Computed in log space relative to the row
    maximum, so low temperatures do not overflow.

    Args:
        anchors: ``[B, D]``; candidates: ``[C, D]``.
        positive_index: ``[B]`` column of each anchor's positive (default ``arange(B)``).
        exclude_mask: ``[B, C]`` candidates that are neither positive nor negative.
    """
    if not 0 <= tau_plus < 1:
        raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
    b = anchors.shape[0]
    logits = cosine_scores(anchors, candidates) / temperature  # [B, C]
    pos_idx = torch.arange(b, device=anchors.device) if positive_index is None else positive_index
    rows = torch.arange(b, device=anchors.device)
    pos = logits[rows, pos_idx]  # [B]
    neg_mask = torch.ones_like(logits, dtype=torch.bool)
    neg_mask[rows, pos_idx] = False
    if exclude_mask is not None:
        neg_mask &= ~exclude_mask
    n = neg_mask.sum(dim=1).to(logits.dtype)  # [B]
    shift = torch.maximum(logits.masked_fill(~neg_mask, -math.inf).amax(dim=1), pos).detach()  # [B]
    e_neg = torch.exp(logits - shift[:, None]) * neg_mask  # [B, C]
    if beta:
        w = torch.softmax((beta * logits).masked_fill(~neg_mask, -math.inf), dim=1) * n[:, None]
        e_neg = w * e_neg
    e_pos = torch.exp(pos - shift)  # [B]
    ng = (e_neg.sum(dim=1) - tau_plus * n * e_pos) / (1 - tau_plus)
    floor = n * torch.exp(-1.0 / torch.as_tensor(temperature, dtype=logits.dtype) - shift)
    ng = torch.maximum(ng, floor)
    return (-(pos - shift) + torch.log(e_pos + ng)).mean()


# ---------------------------------------------------------------------------- modules
@LOSSES.register("dcl", summary="DCL: positive removed from the denominator (Yeh et al.)")
class DCLLoss(ScaledLoss):
    """Decoupled contrastive loss; DCLW when ``sigma`` is set. See :func:`dcl`."""

    def __init__(
        self, temperature: float = 0.1, *, sigma: float | None = None, learnable_temperature: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)
        self.sigma = sigma

    def compute(self, x: LossInputs) -> Tensor:
        anchors, candidates = pair_form(x, "dcl")
        b = anchors.shape[0]
        if candidates.shape[0] < b:
            raise ValueError(f"dcl needs at least {b} candidates (the positives), got {candidates.shape[0]}")
        z1, extra = candidates[:b], candidates[b:]
        rank, _world = self._world()
        return dcl(
            anchors, z1, temperature=self.temperature(), sigma=self.sigma, z0_all=self._gather(anchors),
            z1_all=self._gather(z1), offset=rank * b, extra_negatives=self._gather(extra) if extra.shape[0] else None,
        )


@LOSSES.register("dclw", summary="DCLW: DCL with von Mises-Fisher positive weights (sigma)")
class DCLWLoss(DCLLoss):
    def __init__(
        self, temperature: float = 0.1, *, sigma: float = 0.5, learnable_temperature: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(temperature, sigma=sigma, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)


@LOSSES.register("debiased", summary="debiased (Chuang, tau_plus) + hardness-weighted (Robinson, beta) InfoNCE")
class DebiasedInfoNCELoss(ScaledLoss):
    """See :func:`debiased_info_nce`. ``beta > 0`` adds hard-negative weighting."""

    accepts = frozenset({"exclude_mask"})

    def __init__(
        self, temperature: float = 0.5, *, tau_plus: float = 0.1, beta: float = 0.0, gather_distributed: bool = True
    ) -> None:
        super().__init__(temperature, gather_distributed=gather_distributed)
        if not 0 <= tau_plus < 1:
            raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
        self.tau_plus, self.beta = tau_plus, beta

    def compute(self, x: LossInputs) -> Tensor:
        anchors, candidates = pair_form(x, "debiased")
        rank, world = self._world()
        b = anchors.shape[0]
        return debiased_info_nce(
            anchors, self._gather(candidates), temperature=float(self.temperature()), tau_plus=self.tau_plus,
            beta=self.beta, positive_index=torch.arange(b, device=anchors.device) + rank * candidates.shape[0],
            exclude_mask=place_local_block(x.exclude_mask, world, rank) if x.exclude_mask is not None else None,
        )
