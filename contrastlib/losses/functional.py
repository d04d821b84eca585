"""The contrastive core as pure functions.

Every loss in this package is a cross-entropy between a *target distribution over
candidates* and the *softmax of their scores*::

    loss_i = - sum_j  target[i, j] * log_softmax(scores[i, :])[j]

InfoNCE puts the target on one positive; SupCon spreads it uniformly over several
positives; Bradley-Terry is the two-candidate case; Plackett-Luce and InfoNCA are
built from the same term. :func:`soft_cross_entropy` is that one term;
:func:`info_nce` builds the scores and the target from embeddings.

Functions take embeddings or scores, never models. Scores and log-softmax are always
computed in float32 (or float64 when given), whatever the input precision, so low
temperatures in bf16/fp16 do not overflow; masked entries are filled with the float32
minimum, never with a huge constant in half precision.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

_F = TypeVar("_F", bound=Callable[..., Any])


@contextlib.contextmanager
def autocast_off(*device_types: str) -> Iterator[None]:
    """Switch autocast off for ``device_types`` (default: cpu, and cuda where present).

    Inside an active ``torch.autocast`` a matmul runs in bf16/fp16 even on float32
    inputs; the loss core must not: at temperature 0.05 a bf16 logit is off
    by up to ``2**-8 / 0.05 ~ 0.08``.
    """
    types = set(device_types) or {"cpu", *(("cuda",) if torch.cuda.is_available() else ())}
    with contextlib.ExitStack() as stack:
        for t in sorted(types):
            if torch.is_autocast_enabled(t):
                stack.enter_context(torch.autocast(device_type=t, enabled=False))
        yield


def full_precision(fn: _F) -> _F:
    """Decorator: run ``fn`` with autocast off for the devices of its tensor arguments, so
    scores, softmax and reductions are float32 (or float64) whatever autocast is active."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        types = {a.device.type for a in (*args, *kwargs.values()) if isinstance(a, Tensor)}
        with autocast_off(*types):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def upcast(x: Tensor) -> Tensor:
    """Half precision up to float32 for loss arithmetic; float64 stays float64."""
    return x.to(_compute_dtype(x))


def offset_eye(n: int, m: int, offset: int = 0, *, device: torch.device | None = None) -> Tensor:
    """``[n, m]`` bool, True at ``(i, offset + i)``: each local row's own column among the
    candidates gathered from every device (``offset = rank * n``)."""
    mask = torch.zeros(n, m, dtype=torch.bool, device=device)
    idx = torch.arange(n, device=device)
    mask[idx, offset + idx] = True
    return mask


@full_precision
def soft_cross_entropy(
    scores: Tensor,
    target: Tensor,
    *,
    exclude: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy between a target distribution and ``softmax(scores)``, row-wise.

    Args:
        scores: ``[N, C]`` logits, one row per query, one column per candidate.
        target: ``[N, C]`` non-negative weights; each row is normalised to sum to one.
            A boolean or 0/1 mask gives a uniform distribution over the marked candidates.
            Excluded entries are removed *before* normalising (an excluded positive does
            not down-weight its row). Rows whose remaining weights sum to zero contribute
            nothing and are left out of the mean.
        exclude: optional ``[N, C]`` bool mask of candidates removed from the softmax
            (for example an anchor's similarity with itself).
        reduction: ``"mean"`` over contributing rows, ``"sum"``, or ``"none"`` (``[N]``).

    Returns:
        The loss, in float32 (float64 for float64 input).
    """
    if scores.shape != target.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and target {tuple(target.shape)} differ")
    dtype = _compute_dtype(scores)
    scores = scores.to(dtype)
    if exclude is not None:
        scores = scores.masked_fill(exclude, torch.finfo(dtype).min)
    log_probs = F.log_softmax(scores, dim=-1)  # [N, C]
    weights = target.to(dtype)
    if exclude is not None:
        weights = weights.masked_fill(exclude, 0.0)
    mass = weights.sum(dim=-1, keepdim=True)  # [N, 1]
    valid = mass.squeeze(-1) > 0  # [N]
    weights = weights / mass.clamp_min(torch.finfo(dtype).tiny)
    per_row = -(weights * log_probs).sum(dim=-1)  # [N]
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.sum() / valid.sum().clamp_min(1)
    raise ValueError(f"unknown reduction {reduction!r}; valid: mean, sum, none")


@full_precision
def cosine_scores(anchors: Tensor, candidates: Tensor, *, normalize: bool = True) -> Tensor:
    """``[B, D] x [C, D] -> [B, C]`` similarity in float32 (cosine if ``normalize``)."""
    dtype = _compute_dtype(anchors, candidates)
    a, c = anchors.to(dtype), candidates.to(dtype)
    if normalize:
        a = F.normalize(a, dim=-1)
        c = F.normalize(c, dim=-1)
    return a @ c.T


@full_precision
def info_nce(
    anchors: Tensor,
    candidates: Tensor,
    *,
    positive_mask: Tensor | None = None,
    extra_negatives: Tensor | None = None,
    exclude_mask: Tensor | None = None,
    temperature: float | Tensor = 0.05,
    symmetric: bool = False,
    normalize: bool = True,
) -> Tensor:
    """InfoNCE (a.k.a. NT-Xent, MultipleNegativesRankingLoss, in-batch softmax).

    Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding";
    Chen et al. 2020 (SimCLR, NT-Xent); Gao et al. 2021 (SimCSE); Henderson et al. 2017
    (MultipleNegativesRankingLoss).

    Each anchor is scored against every candidate (and every extra negative, e.g. a
    MoCo queue); the target is uniform over that anchor's positives. With one positive
    per anchor this is the usual cross-entropy; with several it is SupCon's
    ``L_out`` form.

    Args:
        anchors: ``[B, D]`` anchor embeddings.
        candidates: ``[C, D]`` candidate embeddings, ``C >= B`` typically (positives
            first, then hard negatives).
        positive_mask: ``[B, C]`` bool; default: candidate ``i`` is the positive of
            anchor ``i`` (``eye(B, C)``).
        extra_negatives: ``[K, D]`` negatives shared by all anchors (queue or bank).
        exclude_mask: ``[B, C]`` bool of candidates to drop from anchor ``i``'s softmax
            (known false negatives, self-similarity).
        temperature: softmax temperature ``tau`` (scores are divided by it).
        symmetric: also score each positive candidate against all anchors and average
            the two directions (CLIP-style; "MultipleNegativesSymmetricRankingLoss").
        normalize: L2-normalise before the dot product (cosine similarity).

    Returns:
        Scalar loss in float32 (float64 for float64 input).
    """
    if anchors.dim() != 2 or candidates.dim() != 2:
        raise ValueError(
            f"anchors and candidates must be 2-D, got {tuple(anchors.shape)} and "
            f"{tuple(candidates.shape)}"
        )
    if anchors.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"embedding sizes differ: anchors {anchors.shape[1]}, candidates {candidates.shape[1]}"
        )
    batch, n_cand = anchors.shape[0], candidates.shape[0]
    if positive_mask is None:
        if n_cand < batch:
            raise ValueError(f"{n_cand} candidates for {batch} anchors: give a positive_mask")
        positive_mask = torch.eye(batch, n_cand, dtype=torch.bool, device=anchors.device)
    if positive_mask.shape != (batch, n_cand):
        raise ValueError(f"positive_mask must be {(batch, n_cand)}, got {tuple(positive_mask.shape)}")

    scores = cosine_scores(anchors, candidates, normalize=normalize) / temperature  # [B, C]
    target = positive_mask
    exclude = exclude_mask
    if extra_negatives is not None:
        extra = cosine_scores(anchors, extra_negatives, normalize=normalize) / temperature  # [B, K]
        scores = torch.cat([scores, extra], dim=1)  # [B, C + K]
        pad = positive_mask.new_zeros(batch, extra.shape[1])
        target = torch.cat([positive_mask, pad], dim=1)
        if exclude is not None:
            exclude = torch.cat([exclude, pad.bool()], dim=1)
    loss = soft_cross_entropy(scores, target, exclude=exclude)
    if not symmetric:
        return loss

    # Reverse direction: each candidate that is somebody's positive against all anchors.
    is_positive = positive_mask.any(dim=0)  # [C]
    back_scores = scores[:, :n_cand].T[is_positive]  # [P, B]
    back_target = positive_mask.T[is_positive]  # [P, B]
    back_exclude = exclude_mask.T[is_positive] if exclude_mask is not None else None
    back = soft_cross_entropy(back_scores, back_target, exclude=back_exclude)
    return (loss + back) / 2
