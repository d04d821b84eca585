"""Loss modules: thin wrappers that hold hyper-parameters, temperatures and the
cross-device gather, and call the pure functions.

Every module takes the same *pair form* ``forward(anchors [B, D], candidates [C, D])``:
candidate ``i < B`` is anchor ``i``'s positive (its other view, or its paired text) and
candidates beyond ``B`` are extra (hard) negatives. That is what lets any method (SimCSE,
SimCLR, MoCo, ...) name any loss in its config. Under DDP, with ``gather_distributed``
on (the default), candidates come from every device: local anchors against global
candidates, indices offset by rank (see :mod:`contrastlib.losses.distributed`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from contrastlib.losses.ati import ati_info_nce, ati_log_g, ati_surrogate
from contrastlib.losses.chunked import chunked_info_nce
from contrastlib.losses.decoupled import dcl, debiased_info_nce
from contrastlib.losses.distributed import (
    gather_no_grad,
    gather_with_grad,
    global_row_mean,
    place_local_block,
    world_info,
)
from contrastlib.losses.functional import info_nce
from contrastlib.losses.geometry import align_uniform
from contrastlib.losses.margin import hardest_in_batch_negatives, triplet_margin
from contrastlib.losses.multiview import mv_dhel, mv_info_nce
from contrastlib.losses.supervised import nt_xent, supcon
from contrastlib.losses.temperature import Temperature
from contrastlib.registry import LOSSES


class ContrastiveLoss(nn.Module):
    """Base: a temperature (fixed or learnable) and the cross-device switch."""

    #: Set by losses that need each example's dataset id (per-sample parameters).
    needs_ids: ClassVar[bool] = False
    #: Whether candidates beyond the B positives (hard negatives) are part of the loss.
    #: Checked against the method's data before any model loads.
    hard_negatives: ClassVar[bool] = True

    def __init__(
        self,
        temperature: float = 0.05,
        *,
        learnable_temperature: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = Temperature(temperature, learnable=learnable_temperature)
        self.gather_distributed = gather_distributed

    def _world(self) -> tuple[int, int]:
        return world_info() if self.gather_distributed else (0, 1)

    def _gather(self, x: Tensor) -> Tensor:
        return gather_with_grad(x) if self._world()[1] > 1 else x

    def extra_repr(self) -> str:
        return f"gather_distributed={self.gather_distributed}"


def duplicate_mask(positive_mask: Tensor, keys: Tensor) -> Tensor:
    """``[B, C]`` bool: candidate ``j`` holds the same key as one of anchor ``i``'s
    positives and is not a positive of ``i`` itself. Memory ``B x (distinct keys)``,
    never ``C x C`` (C is every device's candidates)."""
    _, key_id = torch.unique(keys, return_inverse=True)  # [C] -> 0..U-1
    has_key = positive_mask.new_zeros(positive_mask.shape[0], int(key_id.max()) + 1)  # [B, U]
    rows, cols = positive_mask.nonzero(as_tuple=True)
    has_key[rows, key_id[cols]] = True
    return has_key[:, key_id] & ~positive_mask


def _split_views(anchors: Tensor, candidates: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    b = anchors.shape[0]
    if candidates.shape[0] != b:
        raise ValueError(
            f"{loss} takes two views of the same examples ([B, D] each); got {b} anchors and "
            f"{candidates.shape[0]} candidates (hard negatives are not part of this loss: "
            "train on pairs, or pick a loss that takes them, e.g. info_nce)"
        )
    return anchors, candidates


@LOSSES.register("info_nce", summary="InfoNCE / NT-Xent one-sided / MNRL: anchors vs candidates (+ queue), chunkable")
class InfoNCELoss(ContrastiveLoss):
    """InfoNCE over (anchors, candidates); see :func:`contrastlib.losses.info_nce`.

    Args:
        temperature: softmax temperature (initial value if learnable).
        symmetric: also score positives against anchors (CLIP-style).
        learnable_temperature: learn a global logit scale (clamped to [0.01, 1]).
        chunk_size: stream the softmax over anchor chunks (memory ``chunk x C``); the
            value equals the plain loss. One positive per anchor.
        gather_distributed: candidates from every device under DDP.
        mask_duplicates: given ``candidate_keys`` (a key per candidate, e.g. a hash of
            its text), drop from anchor ``i``'s softmax every candidate with the same key
            as one of its positives, other than the positives themselves: a copy of the
            positive is never a negative. Keys are gathered across devices with the
            candidates. Default: on, unless ``chunk_size`` is set (the streamed loss
            leaves out at most one column per anchor).

    Example::

        loss_fn = InfoNCELoss(temperature=0.05)
        loss = loss_fn(anchor_emb, torch.cat([positive_emb, hard_negative_emb]))
    """

    def __init__(
        self,
        temperature: float = 0.05,
        *,
        symmetric: bool = False,
        learnable_temperature: bool = False,
        chunk_size: int | None = None,
        gather_distributed: bool = True,
        normalize: bool = True,
        mask_duplicates: bool | None = None,
    ) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if mask_duplicates and chunk_size is not None:
            raise ValueError("mask_duplicates needs the unchunked loss (chunk_size: null)")
        self.symmetric, self.chunk_size, self.normalize = symmetric, chunk_size, normalize
        self.mask_duplicates = chunk_size is None if mask_duplicates is None else mask_duplicates

    def _one_way(
        self, anchors: Tensor, candidates: Tensor, positives: Tensor, exclude: Tensor | None, extra: Tensor | None, tau: Tensor | float
    ) -> Tensor:
        if self.chunk_size is None:
            return info_nce(
                anchors, candidates, positive_mask=positives, exclude_mask=exclude,
                extra_negatives=extra, temperature=tau, normalize=self.normalize,
            )
        if not bool((positives.sum(dim=1) == 1).all()):
            raise ValueError("chunked InfoNCE needs exactly one positive per anchor")
        exclude_index = None
        if exclude is not None:
            if not bool((exclude.sum(dim=1) == 1).all()):
                raise ValueError("chunked InfoNCE excludes exactly one candidate per anchor (or none)")
            exclude_index = exclude.float().argmax(dim=1)
        return chunked_info_nce(
            anchors, candidates, temperature=tau, positive_index=positives.float().argmax(dim=1),
            exclude_index=exclude_index, extra_negatives=extra, chunk_size=self.chunk_size, normalize=self.normalize,
        )

    def forward(
        self,
        anchors: Tensor,
        candidates: Tensor,
        positive_mask: Tensor | None = None,
        extra_negatives: Tensor | None = None,
        exclude_mask: Tensor | None = None,
        candidate_keys: Tensor | None = None,
    ) -> Tensor:
        b, c = anchors.shape[0], candidates.shape[0]
        tau = self.temperature()
        if not self.mask_duplicates:
            candidate_keys = None
        if self.chunk_size is not None and positive_mask is None and exclude_mask is None:
            return self._chunked_diagonal(anchors, candidates, extra_negatives, tau)
        if positive_mask is None:
            if c < b:
                raise ValueError(f"{c} candidates for {b} anchors: give a positive_mask")
            positive_mask = torch.eye(b, c, dtype=torch.bool, device=anchors.device)
        if candidate_keys is not None and candidate_keys.shape != (c,):
            raise ValueError(f"candidate_keys must be [{c}], got {tuple(candidate_keys.shape)}")
        rank, world = self._world()
        cands = self._gather(candidates)
        pos_all = place_local_block(positive_mask, world, rank)
        excl_all = place_local_block(exclude_mask, world, rank) if exclude_mask is not None else None
        if candidate_keys is not None:
            copies = duplicate_mask(pos_all, gather_no_grad(candidate_keys) if world > 1 else candidate_keys)
            excl_all = copies if excl_all is None else excl_all | copies
        loss = self._one_way(anchors, cands, pos_all, excl_all, extra_negatives, tau)
        if not self.symmetric:
            return loss
        # Reverse direction: local positive candidates against all anchors.
        is_pos = positive_mask.any(dim=0)  # [C]
        anchors_all = self._gather(anchors)
        back_pos = place_local_block(positive_mask.T[is_pos], world, rank)
        back_excl = place_local_block(exclude_mask.T[is_pos], world, rank) if exclude_mask is not None else None
        back = self._one_way(candidates[is_pos], anchors_all, back_pos, back_excl, None, tau)
        return (loss + back) / 2

    def _chunked_diagonal(
        self, anchors: Tensor, candidates: Tensor, extra: Tensor | None, tau: Tensor | float
    ) -> Tensor:
        """Candidate i is anchor i's positive: index vectors only, no [B, C] mask at all."""
        assert self.chunk_size is not None
        b = anchors.shape[0]
        if candidates.shape[0] < b:
            raise ValueError(f"{candidates.shape[0]} candidates for {b} anchors: give a positive_mask")
        rank, _ = self._world()
        local = torch.arange(b, device=anchors.device)
        cands = self._gather(candidates)
        loss = chunked_info_nce(
            anchors, cands, temperature=tau, positive_index=rank * candidates.shape[0] + local,
            extra_negatives=extra, chunk_size=self.chunk_size, normalize=self.normalize,
        )
        if not self.symmetric:
            return loss
        back = chunked_info_nce(
            candidates[:b], self._gather(anchors), temperature=tau, positive_index=rank * b + local,
            chunk_size=self.chunk_size, normalize=self.normalize,
        )
        return (loss + back) / 2

    def extra_repr(self) -> str:
        return f"symmetric={self.symmetric}, chunk_size={self.chunk_size}, {super().extra_repr()}"


@LOSSES.register("nt_xent", summary="NT-Xent (SimCLR): 2B views, each against the other 2B-1")
class NTXentLoss(ContrastiveLoss):
    """NT-Xent; see :func:`contrastlib.losses.nt_xent`. Candidates are the second views.

    ``chunk_size`` streams the ``[2B, 2B]`` softmax in anchor chunks (same value).
    """

    hard_negatives = False

    def __init__(
        self, temperature: float = 0.5, *, learnable_temperature: bool = False, chunk_size: int | None = None,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)
        self.chunk_size = chunk_size

    def forward(self, anchors: Tensor, candidates: Tensor) -> Tensor:
        z0, z1 = _split_views(anchors, candidates, "nt_xent")
        rank, world = self._world()
        if self.chunk_size is not None:
            b, m = z0.shape[0], z0.shape[0] * world
            local = torch.arange(b, device=z0.device) + rank * b
            return chunked_info_nce(
                torch.cat([z0, z1]), torch.cat([self._gather(z0), self._gather(z1)]), temperature=self.temperature(),
                positive_index=torch.cat([local + m, local]), exclude_index=torch.cat([local, local + m]),
                chunk_size=self.chunk_size,
            )
        return nt_xent(
            z0, z1, temperature=self.temperature(), z0_all=self._gather(z0), z1_all=self._gather(z1),
            offset=rank * z0.shape[0],
        )


@LOSSES.register("supcon", summary="SupCon: every same-label example is a positive (L_out)")
class SupConLoss(ContrastiveLoss):
    """SupCon; see :func:`contrastlib.losses.supcon`.

    ``forward(features, labels=...)`` with class labels, or the pair form
    ``forward(anchors, candidates)``, where anchor ``i`` and candidate ``i`` share a label
    and extra candidates are negatives (labels made unique across devices).
    """

    def __init__(self, temperature: float = 0.1, *, learnable_temperature: bool = False, gather_distributed: bool = True) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)

    def forward(self, anchors: Tensor, candidates: Tensor | None = None, *, labels: Tensor | None = None) -> Tensor:
        rank, world = self._world()
        features = anchors if candidates is None else torch.cat([anchors, candidates])
        n = features.shape[0]
        if labels is None:
            if candidates is None:
                raise ValueError("supcon needs labels, or (anchors, candidates) pairs")
            b = anchors.shape[0]
            ids = torch.arange(n, device=anchors.device)
            ids[b : 2 * b] = torch.arange(min(b, candidates.shape[0]), device=anchors.device)
            labels = ids + rank * n  # unique per device
        elif labels.shape[0] != n:
            raise ValueError(f"labels must have {n} entries, got {labels.shape[0]}")
        labels_all = gather_no_grad(labels) if world > 1 else labels
        per_row = supcon(
            features, labels, temperature=self.temperature(), features_all=self._gather(features),
            labels_all=labels_all, offset=rank * n, reduction="none",
        )
        # an anchor counts if some other row of the global batch shares its label
        valid = (labels[:, None] == labels_all[None, :]).sum(dim=1) > 1
        return global_row_mean(per_row, valid)


class _MultiViewLoss(ContrastiveLoss):
    name: ClassVar[str]
    hard_negatives = False
    #: Takes ``[V, B, D]`` (any number of views), not only (anchors, candidates).
    multi_view: ClassVar[bool] = True

    def __init__(self, temperature: float = 0.1, *, learnable_temperature: bool = False, gather_distributed: bool = True) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)

    def _views(self, anchors: Tensor, candidates: Tensor | None) -> Tensor:
        if candidates is None:
            if anchors.dim() != 3:
                raise ValueError(f"{self.name} takes views [V, B, D] or (anchors, candidates)")
            return anchors
        return torch.stack(_split_views(anchors, candidates, self.name))

    def _gather_views(self, views: Tensor) -> Tensor:
        if self._world()[1] == 1:
            return views
        per_example = views.transpose(0, 1).contiguous()  # [B, V, D]
        return self._gather(per_example).transpose(0, 1)  # [V, W*B, D]


@LOSSES.register("mv_info_nce", summary="MV-InfoNCE: N >= 2 views, one term per example")
class MVInfoNCELoss(_MultiViewLoss):
    """MV-InfoNCE; see :func:`contrastlib.losses.mv_info_nce`. Input ``[V, B, D]`` or two views."""

    name = "mv_info_nce"

    def forward(self, anchors: Tensor, candidates: Tensor | None = None) -> Tensor:
        views = self._views(anchors, candidates)
        rank, _ = self._world()
        return mv_info_nce(views, temperature=self.temperature(), views_all=self._gather_views(views), offset=rank * views.shape[1])


@LOSSES.register("mv_dhel", summary="MV-DHEL: multi-view, alignment decoupled from uniformity")
class MVDHELLoss(_MultiViewLoss):
    """MV-DHEL; see :func:`contrastlib.losses.mv_dhel`. Input ``[V, B, D]`` or two views."""

    name = "mv_dhel"

    def forward(self, anchors: Tensor, candidates: Tensor | None = None) -> Tensor:
        views = self._views(anchors, candidates)
        rank, _ = self._world()
        return mv_dhel(views, temperature=self.temperature(), views_all=self._gather_views(views), offset=rank * views.shape[1])


@LOSSES.register("dcl", summary="DCL: positive removed from the denominator (Yeh et al.)")
class DCLLoss(ContrastiveLoss):
    """Decoupled contrastive loss; DCLW when ``sigma`` is set. See :func:`contrastlib.losses.dcl`."""

    def __init__(
        self, temperature: float = 0.1, *, sigma: float | None = None, learnable_temperature: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)
        self.sigma = sigma

    def forward(self, anchors: Tensor, candidates: Tensor) -> Tensor:
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
class DebiasedInfoNCELoss(ContrastiveLoss):
    """See :func:`contrastlib.losses.debiased_info_nce`. ``beta > 0`` adds hard-negative weighting."""

    def __init__(
        self, temperature: float = 0.5, *, tau_plus: float = 0.1, beta: float = 0.0, gather_distributed: bool = True
    ) -> None:
        super().__init__(temperature, gather_distributed=gather_distributed)
        if not 0 <= tau_plus < 1:
            raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
        self.tau_plus, self.beta = tau_plus, beta

    def forward(self, anchors: Tensor, candidates: Tensor, exclude_mask: Tensor | None = None) -> Tensor:
        rank, world = self._world()
        b = anchors.shape[0]
        return debiased_info_nce(
            anchors, self._gather(candidates), temperature=float(self.temperature()), tau_plus=self.tau_plus,
            beta=self.beta, positive_index=torch.arange(b, device=anchors.device) + rank * candidates.shape[0],
            exclude_mask=place_local_block(exclude_mask, world, rank) if exclude_mask is not None else None,
        )


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

    needs_ids = True
    log_s: Tensor  # [N] buffers (checkpointed)
    u: Tensor

    def __init__(
        self, num_samples: int, *, temperature: float = 0.1, min_temperature: float = 0.01, rho: float = 0.1,
        gamma: float = 0.9, temperature_lr: float = 0.01, temperature_beta: float = 0.9,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(temperature, gather_distributed=gather_distributed)
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

    def forward(self, anchors: Tensor, candidates: Tensor, *, ids: Tensor) -> Tensor:
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


@LOSSES.register("align_uniform", summary="alignment + uniformity on the hypersphere (Wang & Isola)")
class AlignUniformLoss(ContrastiveLoss):
    """``alignment(a, p) + lam * (uniformity(a) + uniformity(p)) / 2``; uniformity over all devices."""

    def __init__(self, *, lam: float = 1.0, alpha: float = 2.0, t: float = 2.0, gather_distributed: bool = True) -> None:
        super().__init__(1.0, gather_distributed=gather_distributed)
        self.lam, self.alpha, self.t = lam, alpha, t

    hard_negatives = False

    def forward(self, anchors: Tensor, candidates: Tensor) -> Tensor:
        from contrastlib.losses.geometry import alignment, uniformity

        positives = _split_views(anchors, candidates, "align_uniform")[1]
        if self._world()[1] == 1:
            return align_uniform(anchors, positives, lam=self.lam, alpha=self.alpha, t=self.t)
        uni = (uniformity(self._gather(anchors), t=self.t) + uniformity(self._gather(positives), t=self.t)) / 2
        return alignment(anchors, positives, alpha=self.alpha) + self.lam * uni


@LOSSES.register("triplet", summary="triplet margin: d(a,p) - d(a,n) + margin; batch-hard without negatives")
class TripletLoss(ContrastiveLoss):
    """Triplet loss on cosine or euclidean distance. Candidates ``[p; n]``, or ``[p]`` alone,
    in which case each anchor's negative is the closest other positive (batch-hard)."""

    def __init__(self, *, margin: float = 0.5, metric: str = "cosine", gather_distributed: bool = True) -> None:
        super().__init__(1.0, gather_distributed=gather_distributed)
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")
        self.margin, self.metric = margin, metric

    def forward(self, anchors: Tensor, candidates: Tensor) -> Tensor:
        b = anchors.shape[0]
        positives = candidates[:b]
        if candidates.shape[0] >= 2 * b:
            negatives = candidates[b : 2 * b]
        else:
            rank, _ = self._world()
            negatives = hardest_in_batch_negatives(anchors, self._gather(positives), self.metric, offset=rank * b)
        return triplet_margin(anchors, positives, negatives, margin=self.margin, metric=self.metric)

