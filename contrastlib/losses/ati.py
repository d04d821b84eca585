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
from torch import Tensor, nn

from contrastlib.losses.base import ContrastiveLoss, LossInputs, pair_form
from contrastlib.losses.distributed import gather_no_grad, world_info
from contrastlib.losses.functional import cosine_scores, full_precision
from contrastlib.registry import LOSSES


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


# ---------------------------------------------------------------------------- module
@LOSSES.register("ati", summary="ATI: a temperature per example, own step size, SogCLR moving average (needs ids)")
class ATILoss(ContrastiveLoss):
    """ATI / iSogCLR (see :mod:`contrastlib.losses.ati`). ``num_samples`` is the training
    set size; the temperatures ``tau [N]``, the moving averages ``log_s [N]`` and the
    momentum ``u [N]`` are saved in checkpoints.

    Args:
        temperature: initial ``tau_i``.
        min_temperature: ``tau_0``, the lower bound of the projection.
        rho: the DRO radius.
        gamma: moving-average weight of a new mini-batch estimate of ``g_i``.
        temperature_lr: ``eta``, the temperatures' own step size.
        temperature_beta: ``beta``, weight of the new gradient in the temperatures' momentum.

    The temperatures are not in the encoder's optimizer: a method calls
    :meth:`step_own_parameters` before each optimizer step (the Lightning base does).
    """

    accepts = requires = frozenset({"ids"})
    log_s: Tensor  # [N] buffers (checkpointed)
    u: Tensor

    def __init__(
        self, num_samples: int, *, temperature: float = 0.1, min_temperature: float = 0.01, rho: float = 0.1,
        gamma: float = 0.9, temperature_lr: float = 0.01, temperature_beta: float = 0.9,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(gather_distributed=gather_distributed)
        if not temperature > min_temperature > 0:
            raise ValueError(f"need temperature > min_temperature > 0, got {temperature} and {min_temperature}")
        if not 0 < gamma <= 1 or not 0 < temperature_beta <= 1:
            raise ValueError(f"gamma and temperature_beta must be in (0, 1], got {gamma} and {temperature_beta}")
        self.rho, self.gamma = rho, gamma
        self.min_temperature, self.temperature_lr, self.temperature_beta = min_temperature, temperature_lr, temperature_beta
        self.tau = nn.Parameter(torch.full((num_samples,), float(temperature)))
        self.register_buffer("log_s", torch.full((num_samples,), math.nan))  # NaN: not seen yet
        self.register_buffer("u", torch.zeros(num_samples))
        self._pending_ids: list[Tensor] = []
        self._pending_rows = 0

    def own_parameters(self) -> list[nn.Parameter]:
        return [self.tau]

    @torch.no_grad()
    def _update_moving_average(self, ids: Tensor, log_g: Tensor) -> None:
        """``s_i <- (1 - gamma) s_i + gamma g_i`` for every id of the global batch, on every rank."""
        # Always across the process group (even with gather_distributed off): DDP keeps
        # tau's gradient in sync, so s, u and tau must be updated identically on every rank.
        if world_info()[1] > 1:
            ids, log_g = gather_no_grad(ids), gather_no_grad(log_g.contiguous())
        old = self.log_s[ids]
        mixed = torch.logaddexp(old + math.log1p(-self.gamma), log_g + math.log(self.gamma)) if self.gamma < 1 else log_g
        self.log_s[ids] = torch.where(torch.isnan(old), log_g, mixed).to(self.log_s.dtype)
        self._pending_ids.append(ids)

    def compute(self, x: LossInputs) -> Tensor:
        anchors, candidates = pair_form(x, "ati")
        ids = x.ids
        assert ids is not None  # (declared: required)
        rank, _ = self._world()
        b = anchors.shape[0]
        positive_index = torch.arange(b, device=anchors.device) + rank * candidates.shape[0]
        cands = self._gather(candidates)
        tau = self.tau[ids]
        if not self.training:  # evaluation: the objective with the mini-batch estimate
            return ati_info_nce(anchors, cands, tau, rho=self.rho, positive_index=positive_index)
        log_g = ati_log_g(anchors, cands, tau, positive_index)  # [B], with its graph
        self._update_moving_average(ids, log_g.detach())
        self._pending_rows += b
        return ati_surrogate(log_g, tau, self.log_s[ids], rho=self.rho)

    @torch.no_grad()
    def step_own_parameters(self, grad_scale: float = 1.0) -> None:
        """The temperatures' step: momentum, then a projected step, for this step's rows."""
        grad = self.tau.grad
        ids = torch.cat(self._pending_ids).unique() if self._pending_ids else None
        rows = self._pending_rows * world_info()[1]
        self._pending_ids, self._pending_rows, self.tau.grad = [], 0, None
        if grad is None or ids is None or rows == 0:
            return
        # tau.grad is dL/dtau of a mean over `rows` anchors (DDP averages over ranks; an
        # accumulated loss is divided by the accumulation): per-example gradient = grad * rows
        g = grad[ids] * rows / grad_scale
        if not bool(torch.isfinite(g).all()):  # an fp16 step the scaler will skip
            return
        self.u[ids] = (1 - self.temperature_beta) * self.u[ids] + self.temperature_beta * g
        self.tau[ids] = (self.tau[ids] - self.temperature_lr * self.u[ids]).clamp_min(self.min_temperature)
