"""Heads with one scalar reward per response: Bradley-Terry and its relatives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from contrastlib.heads.base import Preferences, RewardHead, reward_network
from contrastlib.losses.distributed import world_info
from contrastlib.losses.preference import (
    bco,
    bradley_terry,
    gaussian_preference,
    infonca,
    nca,
    plackett_luce,
    ranking_order,
    robust_bradley_terry,
)
from contrastlib.registry import HEADS


def _pairs(batch: Preferences) -> tuple[Tensor, Tensor]:
    if batch.kind != "pairs" or batch.chosen is None or batch.rejected is None:
        raise ValueError(f"this head trains on pairs, got a {batch.kind} batch")
    return batch.chosen, batch.rejected


def _lists(batch: Preferences) -> tuple[Tensor, Tensor, Tensor]:
    if batch.kind != "lists" or batch.responses is None or batch.scores is None:
        raise ValueError(f"this head trains on scored lists, got a {batch.kind} batch")
    mask = batch.mask if batch.mask is not None else torch.ones(batch.scores.shape, dtype=torch.bool)
    return batch.responses, batch.scores, mask


class ScalarHead(RewardHead):
    """A reward network ``[N, D] -> [N]`` (linear, or an MLP with ``hidden`` units)."""

    def __init__(self, dim: int, *, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dim)
        self.net = reward_network(dim, 1, hidden=hidden, dropout=dropout)

    def reward(self, emb: Tensor, user: Tensor | None = None) -> Tensor:
        return self.net(emb).squeeze(-1).float()

    def list_rewards(self, responses: Tensor) -> Tensor:
        b, k, d = responses.shape
        return self.reward(responses.reshape(b * k, d)).reshape(b, k)


@HEADS.register("bradley_terry", summary="Bradley-Terry scalar reward (linear or MLP), margin, soft labels, centring")
class BradleyTerryHead(ScalarHead):
    """Bradley-Terry reward model: ``P(chosen > rejected) = sigmoid(r_c - r_r)``.

    Bradley and Terry 1952; the reward-model objective of Ouyang et al. 2022
    (InstructGPT). Options as TRL's RewardTrainer: a per-pair ``margin`` column (Touvron
    et al. 2023, Llama 2) and ``center_rewards_coefficient`` (Eisenstein et al. 2023),
    which adds ``coef * mean((r_c + r_r)^2)`` so rewards stay centred on zero. A pair's
    ``strength`` in ``[0, 1]`` is a soft label.

    Args:
        hidden: units of an MLP reward (null: linear).
        center_rewards_coefficient: weight of the centring term (0: off).
        use_margin: use the data's margin column when it has one.
    """

    def __init__(
        self, dim: int, *, hidden: int | None = None, dropout: float = 0.0,
        center_rewards_coefficient: float = 0.0, use_margin: bool = True,
    ) -> None:
        super().__init__(dim, hidden=hidden, dropout=dropout)
        if center_rewards_coefficient < 0:
            raise ValueError(f"center_rewards_coefficient must be >= 0, got {center_rewards_coefficient}")
        self.center_rewards_coefficient = center_rewards_coefficient
        self.use_margin = use_margin

    def loss(self, batch: Preferences) -> Tensor:
        chosen, rejected = _pairs(batch)
        rc, rr = self.reward(chosen), self.reward(rejected)
        loss = bradley_terry(rc, rr, margin=batch.margin if self.use_margin else None, strength=batch.strength)
        if self.center_rewards_coefficient:
            loss = loss + self.center_rewards_coefficient * ((rc + rr) ** 2).mean()
        return loss


@HEADS.register("robust_bradley_terry", summary="Bradley-Terry corrected for a known label-flip rate (rDPO)")
class RobustBradleyTerryHead(ScalarHead):
    """Bradley-Terry with the unbiased correction for labels flipped at a known rate
    (Chowdhury, Kini and Natarajan 2024, "Provably Robust DPO: Aligning Language Models
    with Noisy Feedback"). See :func:`~contrastlib.losses.preference.robust_bradley_terry`.

    Args:
        flip_rate: the share of pairs whose label is flipped, in ``[0, 0.5)``.
    """

    def __init__(self, dim: int, *, flip_rate: float = 0.1, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dim, hidden=hidden, dropout=dropout)
        if not 0 <= flip_rate < 0.5:
            raise ValueError(f"flip_rate must be in [0, 0.5), got {flip_rate}")
        self.flip_rate = flip_rate

    def loss(self, batch: Preferences) -> Tensor:
        chosen, rejected = _pairs(batch)
        return robust_bradley_terry(self.reward(chosen), self.reward(rejected), flip_rate=self.flip_rate)


@HEADS.register("plackett_luce", summary="Plackett-Luce over ranked lists (two items: Bradley-Terry)")
class PlackettLuceHead(ScalarHead):
    """Plackett-Luce listwise reward model (Plackett 1975; Luce 1959; as used for
    ranked responses by Zhu et al. 2023 and Song et al. 2024, PRO). The data's scores
    give the order (ties keep the file's order); two items are Bradley-Terry.
    """

    trains_on = "lists"

    def loss(self, batch: Preferences) -> Tensor:
        responses, scores, mask = _lists(batch)
        return plackett_luce(self.list_rewards(responses), ranking_order(scores, mask), mask)


@HEADS.register("infonca", summary="InfoNCA: softmax cross-entropy against softmax(rewards / alpha)")
class InfoNCAHead(ScalarHead):
    """InfoNCA (Chen, Yu, Yang and Zhu 2024, "Noise Contrastive Alignment of Language
    Models with Explicit Rewards"): responses with scalar rewards; the target over a
    prompt's responses is ``softmax(rewards / alpha)``. One-hot rewards make it InfoNCE.

    Args:
        alpha: temperature of the target distribution.
    """

    trains_on = "lists"

    def __init__(self, dim: int, *, alpha: float = 1.0, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dim, hidden=hidden, dropout=dropout)
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def loss(self, batch: Preferences) -> Tensor:
        responses, scores, mask = _lists(batch)
        return infonca(self.list_rewards(responses), scores, mask, alpha=self.alpha)


@HEADS.register("nca", summary="NCA: per-response sigmoids weighted by softmax(rewards / alpha)")
class NCAHead(InfoNCAHead):
    """NCA (Chen, Yu, Yang and Zhu 2024, same paper as InfoNCA): each response's own
    sigmoid, so the absolute reward level is learnt too, not only differences."""

    def loss(self, batch: Preferences) -> Tensor:
        responses, scores, mask = _lists(batch)
        return nca(self.list_rewards(responses), scores, mask, alpha=self.alpha)


@HEADS.register("bco", summary="BCO: binary classifier on unpaired thumbs-up/down feedback")
class BCOHead(ScalarHead):
    """Binary Classifier Optimisation (Jung et al. 2024, "Binary Classifier Optimization
    for Large Language Model Alignment") for unpaired feedback: ``sigmoid(r - delta)``
    classifies thumbs-up against thumbs-down; ``delta`` is a running mean of the
    rewards (the paper's reward shift), kept in the checkpoint. Under DDP the mean added
    each step is the global batch's (summed over ranks), so every rank holds the same
    ``delta`` as one process at the global batch.

    Args:
        delta_momentum: weight of the old value in the running mean.
    """

    trains_on = "unpaired"
    delta: Tensor

    def __init__(self, dim: int, *, delta_momentum: float = 0.99, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dim, hidden=hidden, dropout=dropout)
        if not 0 <= delta_momentum < 1:
            raise ValueError(f"delta_momentum must be in [0, 1), got {delta_momentum}")
        self.delta_momentum = delta_momentum
        self.register_buffer("delta", torch.zeros(()))

    def loss(self, batch: Preferences) -> Tensor:
        if batch.kind != "unpaired" or batch.responses is None or batch.label is None:
            raise ValueError(f"bco trains on unpaired feedback, got a {batch.kind} batch")
        rewards = self.reward(batch.responses)
        loss = bco(rewards, batch.label, delta=self.delta)
        if self.training:
            with torch.no_grad():
                r = rewards.detach().float()
                total = torch.stack([r.sum(), r.new_tensor(float(len(r)))])
                if world_info()[1] > 1:
                    dist.all_reduce(total)
                mean = total[0] / total[1].clamp_min(1)
                self.delta.mul_(self.delta_momentum).add_((1 - self.delta_momentum) * mean)
        return loss


@HEADS.register("gaussian", summary="Gaussian reward (mean and variance), Thurstone pairs: reward with uncertainty")
class GaussianHead(RewardHead):
    """A reward with uncertainty: ``r ~ N(mu(e), sigma(e)^2)``; pairs follow Thurstone's
    model ``P(c > r) = Phi((mu_c - mu_r) / sqrt(1 + sigma_c^2 + sigma_r^2))``. A pair the
    head finds ambiguous can be explained by variance instead of bending the mean, which
    is what makes Gaussian reward heads robust to noisy labels (Thurstone 1927; PEARL-style
    robust reward learning, Lou et al. 2024). :meth:`uncertainty` gives ``sigma``.
    """

    def __init__(self, dim: int, *, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dim)
        self.net = reward_network(dim, 2, hidden=hidden, dropout=dropout)

    def _moments(self, emb: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(emb).float()
        return out[:, 0], nn.functional.softplus(out[:, 1])  # mean, variance

    def reward(self, emb: Tensor, user: Tensor | None = None) -> Tensor:
        return self._moments(emb)[0]

    def uncertainty(self, emb: Tensor) -> Tensor:
        """``[N]`` standard deviation of each response's reward."""
        return self._moments(emb)[1].sqrt()

    def prefer(self, a: Tensor, b: Tensor, user: Tensor | None = None) -> Tensor:
        # log-odds of the Thurstone probability, so accuracy and calibration read it
        (ma, va), (mb, vb) = self._moments(a), self._moments(b)
        p = torch.special.ndtr((ma - mb) / torch.sqrt(1 + va + vb)).clamp(1e-7, 1 - 1e-7)
        return torch.logit(p)

    def loss(self, batch: Preferences) -> Tensor:
        chosen, rejected = _pairs(batch)
        (mc, vc), (mr, vr) = self._moments(chosen), self._moments(rejected)
        return gaussian_preference(mc, vc, mr, vr)


@HEADS.register("multi_objective", summary="vector reward (one per objective) with a user-chosen direction")
class MultiObjectiveHead(RewardHead):
    """A vector reward, one component per objective, combined along a direction the user
    chooses at scoring time (as ArmoRM's and multi-objective reward models' linear
    scalarisation, Wang et al. 2024). Pairs that carry an ``objective`` train that
    component with Bradley-Terry; pairs without one train the combined reward.

    Args:
        objectives: the components' names (data rows name one in ``objective``).
        direction: their weights in the combined reward (default: equal).
    """

    direction: Tensor
    vector = True

    def __init__(
        self, dim: int, *, objectives: Sequence[str] = ("helpful", "harmless"), direction: Sequence[float] | None = None,
        hidden: int | None = None, dropout: float = 0.0,
    ) -> None:
        super().__init__(dim)
        names = list(objectives)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"objectives must be distinct names, got {names}")
        weights = [1.0 / len(names)] * len(names) if direction is None else [float(w) for w in direction]
        if len(weights) != len(names):
            raise ValueError(f"direction has {len(weights)} weights for {len(names)} objectives")
        self.objectives = names
        self.net = reward_network(dim, len(names), hidden=hidden, dropout=dropout)
        self.register_buffer("direction", torch.tensor(weights))

    def set_direction(self, direction: Sequence[float]) -> None:
        if len(direction) != len(self.objectives):
            raise ValueError(f"direction has {len(direction)} weights for objectives {self.objectives}")
        self.direction.copy_(torch.tensor([float(w) for w in direction]))

    def rewards(self, emb: Tensor) -> Tensor:
        """``[N, M]``: every objective's reward."""
        return self.net(emb).float()

    def reward(self, emb: Tensor, user: Tensor | None = None) -> Tensor:
        return self.rewards(emb) @ self.direction.float()

    def loss(self, batch: Preferences) -> Tensor:
        chosen, rejected = _pairs(batch)
        rc, rr = self.rewards(chosen), self.rewards(rejected)  # [B, M]
        combined = (rc @ self.direction.float(), rr @ self.direction.float())
        objective = batch.objective if batch.objective is not None else torch.full(
            (rc.shape[0],), -1, dtype=torch.long, device=rc.device
        )
        pick = objective.clamp_min(0)[:, None]
        own = objective >= 0
        c = torch.where(own, rc.gather(1, pick).squeeze(1), combined[0])
        r = torch.where(own, rr.gather(1, pick).squeeze(1), combined[1])
        return bradley_terry(c, r, margin=batch.margin, strength=batch.strength)

    def extra_state(self) -> dict[str, Any]:
        return {"objectives": self.objectives, "direction": [float(w) for w in self.direction]}
