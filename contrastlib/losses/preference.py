"""Preference losses as pure functions on reward scores.

They are the same term as InfoNCE (:func:`~contrastlib.losses.functional.soft_cross_entropy`:
a cross-entropy between a target distribution over candidates and the softmax of their
scores); only the candidates and the target change:

* Bradley-Terry: two candidates (chosen, rejected), target ``[p, 1 - p]`` (``p = 1`` for a
  hard label, the preference strength for a soft one). ``-log sigmoid(r_c - r_r)`` is the
  two-way softmax cross-entropy.
* Plackett-Luce: a ranked list is a chain of softmaxes, each over the items not yet placed,
  target on the item placed next. With two items it is Bradley-Terry.
* InfoNCA: the target is ``softmax(rewards / alpha)`` over the responses; with a one-hot
  reward it is InfoNCE.

The rest are not a single softmax and say so: NCA (per-response sigmoids), BCO (binary
classification of unpaired feedback), the noise-corrected Bradley-Terry (a signed
combination of two cross-entropies) and the Gaussian (Thurstone) pair.

Inputs are reward scores (``[B]`` or ``[B, K]``), never models. Arithmetic is float32
(float64 for float64 input) with autocast off, as in the rest of the loss core.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlib.losses.functional import full_precision, soft_cross_entropy, upcast


def _reduce(per_row: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_row.mean()
    if reduction == "sum":
        return per_row.sum()
    if reduction == "none":
        return per_row
    raise ValueError(f"unknown reduction {reduction!r}; valid: mean, sum, none")


@full_precision
def bradley_terry(
    chosen: Tensor,
    rejected: Tensor,
    *,
    margin: Tensor | None = None,
    strength: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Bradley-Terry negative log-likelihood ``-log sigmoid(r_c - r_r - margin)``.

    Bradley and Terry 1952; Ouyang et al. 2022 (InstructGPT's reward model); the
    ``margin`` term is Llama 2's (Touvron et al. 2023) and TRL's ``margin`` column.

    Args:
        chosen, rejected: ``[B]`` rewards.
        margin: ``[B]`` how much the chosen reward must exceed the rejected one.
        strength: ``[B]`` soft label in ``[0, 1]``: the probability that ``chosen`` is
            preferred (1: a hard label). The loss is then the cross-entropy with
            ``[p, 1 - p]``.
    """
    c, r = upcast(chosen), upcast(rejected)
    if margin is not None:
        c = c - margin.to(c.dtype)
    scores = torch.stack([c, r], dim=-1)  # [B, 2]
    p = torch.ones_like(c) if strength is None else strength.to(c.dtype)
    target = torch.stack([p, 1 - p], dim=-1)
    return _reduce(soft_cross_entropy(scores, target, reduction="none"), reduction)


@full_precision
def plackett_luce(
    scores: Tensor,
    order: Tensor,
    mask: Tensor | None = None,
    *,
    reduction: str = "mean",
) -> Tensor:
    """Plackett-Luce negative log-likelihood of a ranking (Plackett 1975; Luce 1959).

    ``-sum_k log softmax(scores over items not yet placed)[item placed k-th]``: one
    softmax cross-entropy per position, each with the items already placed excluded.

    Args:
        scores: ``[B, K]`` rewards of each list's items.
        order: ``[B, K]`` long: item indices from best to worst (padding positions last).
        mask: ``[B, K]`` bool, True for real items (lists may be shorter than ``K``).
    """
    s = upcast(scores)
    b, k = s.shape
    mask = torch.ones_like(s, dtype=torch.bool) if mask is None else mask
    n_items = mask.sum(dim=1)  # [B]
    rank_of = torch.empty_like(order)
    rank_of.scatter_(1, order, torch.arange(k, device=s.device).expand(b, k))  # [B, K] position of each item
    steps = torch.arange(k - 1, device=s.device)  # the last item's step is log(1) = 0
    # exclude[b, t, j]: item j is padding or was placed before step t
    exclude = ~mask[:, None, :] | (rank_of[:, None, :] < steps[None, :, None])  # [B, K-1, K]
    target = rank_of[:, None, :] == steps[None, :, None]  # [B, K-1, K]
    live = steps[None, :] < (n_items[:, None] - 1)  # [B, K-1]: a real choice among >= 2 items
    per_step = soft_cross_entropy(
        s[:, None, :].expand(b, k - 1, k).reshape(-1, k), target.reshape(-1, k) & live.reshape(-1, 1),
        exclude=exclude.reshape(-1, k), reduction="none",
    ).reshape(b, k - 1)
    return _reduce(per_step.sum(dim=1), reduction)


def ranking_order(target_scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """``[B, K]`` item indices from the highest target score to the lowest; padding last.
    Ties keep the input order (a stable sort)."""
    t = upcast(target_scores)
    if mask is not None:
        t = t.masked_fill(~mask, float("-inf"))
    return torch.sort(t, dim=1, descending=True, stable=True).indices


def reward_target(rewards: Tensor, mask: Tensor, alpha: float) -> Tensor:
    """``softmax(rewards / alpha)`` over each row's real responses (InfoNCA's and NCA's
    target); padding gets zero weight."""
    r = upcast(rewards)
    return torch.softmax(r.masked_fill(~mask, torch.finfo(r.dtype).min) / alpha, dim=-1)


@full_precision
def infonca(
    scores: Tensor,
    rewards: Tensor,
    mask: Tensor | None = None,
    *,
    alpha: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """InfoNCA (Chen et al. 2024, "Noise Contrastive Alignment of Language Models with
    Explicit Rewards"): the cross-entropy between ``softmax(rewards / alpha)`` and
    ``softmax(scores)`` over a prompt's responses. A one-hot reward makes it InfoNCE.

    Args:
        scores: ``[B, K]`` the model's rewards (logits).
        rewards: ``[B, K]`` the data's scalar rewards.
        mask: ``[B, K]`` bool, True for real responses.
        alpha: temperature of the target distribution.
    """
    s = upcast(scores)
    mask = torch.ones_like(s, dtype=torch.bool) if mask is None else mask
    target = reward_target(rewards, mask, alpha)
    return _reduce(soft_cross_entropy(s, target, exclude=~mask, reduction="none"), reduction)


@full_precision
def nca(
    scores: Tensor,
    rewards: Tensor,
    mask: Tensor | None = None,
    *,
    alpha: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """NCA (Chen et al. 2024, same paper as InfoNCA): each response's own sigmoid,
    ``-sum_i w_i log sigmoid(s_i) - (1/K) sum_i log sigmoid(-s_i)`` with
    ``w = softmax(rewards / alpha)``. Unlike InfoNCA it also moves the absolute level of
    the scores (InfoNCA sees only their differences).
    """
    s = upcast(scores)
    m = torch.ones_like(s, dtype=torch.bool) if mask is None else mask
    w = reward_target(rewards, m, alpha)
    n = m.sum(dim=-1, keepdim=True).clamp_min(1)
    per_item = -w * F.logsigmoid(s) - F.logsigmoid(-s) / n
    return _reduce(per_item.masked_fill(~m, 0.0).sum(dim=-1), reduction)


@full_precision
def robust_bradley_terry(
    chosen: Tensor, rejected: Tensor, *, flip_rate: float, reduction: str = "mean"
) -> Tensor:
    """Bradley-Terry corrected for labels flipped at a known rate ``eps`` (Chowdhury et
    al. 2024, "Provably Robust DPO"): ``((1 - eps) l(d) - eps l(-d)) / (1 - 2 eps)`` with
    ``l(d) = -log sigmoid(d)``, ``d = r_c - r_r``. Its expectation over the noisy labels
    is the clean loss. It is unbounded below for a single row, so use weight decay.
    """
    if not 0 <= flip_rate < 0.5:
        raise ValueError(f"flip_rate must be in [0, 0.5), got {flip_rate}")
    d = upcast(chosen) - upcast(rejected)
    per_row = ((1 - flip_rate) * -F.logsigmoid(d) - flip_rate * -F.logsigmoid(-d)) / (1 - 2 * flip_rate)
    return _reduce(per_row, reduction)


@full_precision
def gaussian_preference(
    mean_chosen: Tensor,
    var_chosen: Tensor,
    mean_rejected: Tensor,
    var_rejected: Tensor,
    *,
    noise: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Thurstone's pair for Gaussian rewards ``r ~ N(mean, var)``: ``P(c > r) =
    Phi((mu_c - mu_r) / sqrt(noise + var_c + var_r))``; the loss is ``-log P``. A
    response the model is unsure of (large variance) pulls its pairs towards 1/2, so a
    confident wrong pair costs less than under Bradley-Terry (Thurstone 1927; Gaussian
    reward heads for robust reward learning, e.g. Lou et al. 2024, PEARL).
    """
    mc, mr = upcast(mean_chosen), upcast(mean_rejected)
    scale = torch.sqrt(noise + upcast(var_chosen) + upcast(var_rejected))
    return _reduce(-torch.special.log_ndtr((mc - mr) / scale), reduction)


@full_precision
def bco(rewards: Tensor, labels: Tensor, *, delta: Tensor | float = 0.0, reduction: str = "mean") -> Tensor:
    """Binary classifier optimisation for unpaired thumbs-up/down feedback (Jung et al.
    2024, "Binary Classifier Optimization for Large Language Model Alignment"): binary
    cross-entropy with logits ``reward - delta``, where ``delta`` is a running mean of
    the rewards (the paper's reward shift)."""
    r = upcast(rewards)
    d = delta.to(r.dtype) if isinstance(delta, Tensor) else delta
    per_row = F.binary_cross_entropy_with_logits(r - d, labels.to(r.dtype), reduction="none")
    return _reduce(per_row, reduction)
