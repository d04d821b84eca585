"""InfoNCE with a learnable temperature per example (ATI / iSogCLR).

Qiu et al. 2023, "Not All Semantics are Created Equal: Contrastive Self-supervised
Learning with Automatic Temperature Individualization". Each anchor ``i`` has its own
``tau_i`` (indexed by dataset id) and minimises the distributionally robust objective::

    F_i = tau_i * log g_i + tau_i * rho,    g_i = mean_{n in negatives} exp(h_in / tau_i),
    h_in = s_in - s_ip

Frequent semantics learn a large ``tau_i`` (tolerant), rare ones a small ``tau_i``.

The gradient of ``log g_i`` needs ``g_i`` over the whole data set, which a mini-batch
does not give. The paper's estimator (SogCLR's) keeps a moving average ``s_i`` of the
mini-batch ``g_i``, updated each time ``i`` is in a batch, ``s_i <- (1 - gamma) s_i +
gamma g_i`` (``s_i = g_i`` at the first visit), and uses::

    dF/dw     ~ tau_i / s_i * dg_i/dw
    dF/dtau_i ~ log s_i + rho + tau_i / s_i * dg_i/dtau_i

The temperatures follow their own rule with their own step size (not the encoder's
optimizer, whose small learning rate would leave them where they start): a momentum
average ``u_i <- (1 - beta) u_i + beta dF/dtau_i`` and a projected step
``tau_i <- max(tau_0, tau_i - eta u_i)`` for the rows of the step's global batch.

:func:`ati_info_nce` is the objective with the mini-batch ``g_i`` (a reference);
:func:`ati_surrogate` is the estimator's loss, whose gradients are the above.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from contrastlib.losses.functional import cosine_scores, full_precision


@full_precision
def ati_log_g(anchors: Tensor, candidates: Tensor, tau: Tensor, positive_index: Tensor | None = None) -> Tensor:
    """``log g_i = log mean_n exp((s_in - s_ip) / tau_i)`` over each anchor's negatives, ``[B]``."""
    b = anchors.shape[0]
    s = cosine_scores(anchors, candidates)  # [B, C]
    rows = torch.arange(b, device=anchors.device)
    pos_idx = rows if positive_index is None else positive_index
    pos = s[rows, pos_idx]  # [B]
    z = (s - pos[:, None]) / tau.to(s.dtype)[:, None]  # [B, C]
    negatives = torch.ones_like(z, dtype=torch.bool)
    negatives[rows, pos_idx] = False
    z = z.masked_fill(~negatives, -math.inf)
    return torch.logsumexp(z, dim=1) - torch.log(negatives.sum(dim=1).to(s.dtype))


@full_precision
def ati_info_nce(
    anchors: Tensor,
    candidates: Tensor,
    temperatures: Tensor,
    *,
    rho: float = 0.1,
    positive_index: Tensor | None = None,
) -> Tensor:
    """The objective with the mini-batch estimate of ``g_i``: ``mean_i tau_i (log g_i + rho)``.

    ``anchors [B, D]``, ``candidates [C, D]``, ``temperatures [B]`` -> scalar.
    """
    tau = temperatures.to(torch.float64 if anchors.dtype == torch.float64 else torch.float32)
    return (tau * (ati_log_g(anchors, candidates, tau, positive_index) + rho)).mean()


def ati_surrogate(log_g: Tensor, temperatures: Tensor, log_s: Tensor, *, rho: float = 0.1) -> Tensor:
    """The estimator's loss (see the module docstring): its value is the objective
    ``mean_i tau_i (log g_i + rho)``, its gradients those of the SogCLR estimator.

    Args:
        log_g: ``[B]`` from :func:`ati_log_g` (with its graph).
        temperatures: ``[B]`` the anchors' ``tau_i`` (with gradient).
        log_s: ``[B]`` log of the moving averages ``s_i`` *after* this batch's update.
    """
    tau = temperatures.to(log_g.dtype)
    log_s = log_s.to(log_g.dtype).detach()
    surrogate = (tau.detach() * torch.exp(log_g - log_s) + tau * (log_s + rho)).mean()
    objective = (tau * (log_g + rho)).mean().detach()
    return objective + surrogate - surrogate.detach()
