"""InfoNCE with a learnable temperature per example (ATI).

Qiu et al. 2023, "Not All Semantics are Created Equal: Contrastive Self-supervised
Learning with Automatic Temperature Individualization". Each anchor ``i`` has its own
``tau_i`` (indexed by dataset id) and minimises the distributionally robust objective::

    l_i = tau_i * log( mean_{n in negatives} exp((s_in - s_ip) / tau_i) ) + tau_i * rho

Frequent semantics learn a large ``tau_i`` (tolerant), rare ones a small ``tau_i``. The
paper estimates the inner mean with a moving average across epochs (SogCLR); this
implementation uses the mini-batch estimate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from contrastlib.losses.functional import cosine_scores, full_precision


@full_precision
def ati_info_nce(
    anchors: Tensor,
    candidates: Tensor,
    temperatures: Tensor,
    *,
    rho: float = 0.1,
    positive_index: Tensor | None = None,
) -> Tensor:
    """``anchors [B, D]``, ``candidates [C, D]``, ``temperatures [B]`` -> scalar."""
    b = anchors.shape[0]
    s = cosine_scores(anchors, candidates)  # [B, C]
    rows = torch.arange(b, device=anchors.device)
    pos_idx = rows if positive_index is None else positive_index
    pos = s[rows, pos_idx]  # [B]
    tau = temperatures.to(s.dtype)
    z = (s - pos[:, None]) / tau[:, None]  # [B, C]
    negatives = torch.ones_like(z, dtype=torch.bool)
    negatives[rows, pos_idx] = False
    z = z.masked_fill(~negatives, -math.inf)
    log_mean = torch.logsumexp(z, dim=1) - torch.log(negatives.sum(dim=1).to(s.dtype))
    return (tau * (log_mean + rho)).mean()
