"""Heads for preferences that a single scalar reward cannot hold: users who disagree
(PAL, a mixture of Bradley-Terry heads) and intransitive preferences (GPM)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlib.heads.base import Preferences, RewardHead, fit_head, reward_network
from contrastlib.heads.scalar import _pairs
from contrastlib.losses.preference import bradley_terry
from contrastlib.registry import HEADS


class _UserMixture(RewardHead):
    """Per-user weights over ``K`` shared components (softmax of per-user logits).

    A user the head has not seen (``user == -1``) gets the population's average weights.
    :meth:`add_user` learns a new user's weights from a handful of their pairs with every
    shared parameter frozen (the few-shot step of PAL).
    """

    per_user = True

    def __init__(self, dim: int, *, components: int, num_users: int) -> None:
        super().__init__(dim)
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        if num_users < 0:
            raise ValueError(f"num_users must be >= 0, got {num_users}")
        self.components = components
        self.user_logits = nn.Parameter(torch.zeros(num_users, components))
        # Users start apart (zero logits would give every user the same mixture and the
        # same gradient, and nothing would break the tie).
        nn.init.normal_(self.user_logits, std=1.0)

    @property
    def num_users(self) -> int:
        return int(self.user_logits.shape[0])

    def weights(self, user: Tensor | None, n: int, device: torch.device) -> Tensor:
        """``[n, K]`` mixture weights of each row's user."""
        if self.num_users == 0:
            return torch.full((n, self.components), 1.0 / self.components, device=device)
        table = torch.softmax(self.user_logits.float(), dim=-1)  # [U, K]
        mean = table.mean(dim=0, keepdim=True)  # [1, K]
        if user is None:
            return mean.expand(n, -1)
        known = (user >= 0) & (user < self.num_users)
        return torch.where(known[:, None], table[user.clamp(0, self.num_users - 1)], mean)

    def add_user(self, pairs: Preferences, *, steps: int = 200, lr: float = 0.1) -> int:
        """Learn a new user's mixture weights from their pairs, every shared parameter
        frozen; returns the new user's id."""
        table = self.user_logits.detach()
        new = torch.zeros(1, self.components, device=table.device, requires_grad=True)
        row = torch.full((len(pairs),), self.num_users, dtype=torch.long, device=table.device)

        def loss(batch: Preferences) -> Tensor:
            weights = torch.softmax(torch.cat([table, new]).float(), dim=-1)[row]
            return self.pair_loss(batch, weights)

        fit_head(self, pairs, steps=steps, lr=lr, parameters=[new], loss_fn=loss)
        self.user_logits = nn.Parameter(torch.cat([table, new.detach()]))
        return self.num_users - 1

    def pair_loss(self, batch: Preferences, weights: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, batch: Preferences) -> Tensor:
        chosen, _ = _pairs(batch)
        return self.pair_loss(batch, self.weights(batch.user, chosen.shape[0], chosen.device))

    def extra_state(self) -> dict[str, Any]:
        return {"num_users": self.num_users}


@HEADS.register("pal", summary="PAL ideal points: K shared prototypes, per-user weights, few-shot for a new user")
class PALHead(_UserMixture):
    """PAL's ideal-point model (Chen et al. 2024, "PAL: Sample-Efficient Personalized
    Reward Modeling for Pluralistic Alignment", ICLR 2025). Responses are mapped to
    ``f(e)`` in a preference space; each user's ideal point is a convex mix of ``K``
    shared prototypes; the reward is ``-||f(e) - a_u||^2`` and pairs follow
    Bradley-Terry. A new user needs only their mixture weights (:meth:`add_user`).

    Args:
        prototypes: ``K``, the shared prototypes.
        space: size of the preference space.
        hidden: units of an MLP ``f`` (null: linear).
    """

    def __init__(
        self, dim: int, *, num_users: int = 0, prototypes: int = 2, space: int = 16, hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, components=prototypes, num_users=num_users)
        self.project = reward_network(dim, space, hidden=hidden, dropout=dropout)
        self.prototypes = nn.Parameter(torch.randn(prototypes, space) * 0.5)

    def _reward(self, emb: Tensor, weights: Tensor) -> Tensor:
        ideal = weights @ self.prototypes.float()  # [N, S]
        return -((self.project(emb).float() - ideal) ** 2).sum(dim=-1)

    def reward(self, emb: Tensor, user: Tensor | None = None) -> Tensor:
        return self._reward(emb, self.weights(user, emb.shape[0], emb.device))

    def pair_loss(self, batch: Preferences, weights: Tensor) -> Tensor:
        chosen, rejected = _pairs(batch)
        return bradley_terry(self._reward(chosen, weights), self._reward(rejected, weights),
                             margin=batch.margin, strength=batch.strength)


@HEADS.register("bt_mixture", summary="mixture of K Bradley-Terry heads with per-user weights")
class MixtureBTHead(_UserMixture):
    """A mixture of ``K`` Bradley-Terry reward functions: ``P(c > r | u) = sum_k
    w_uk sigmoid(r_k(c) - r_k(r))`` (latent-class preference models; as in the
    mixture baselines of pluralistic alignment, e.g. Chakraborty et al. 2024, MaxMin-RLHF).
    The scalar reward for a user is ``sum_k w_uk r_k``.

    Args:
        components: ``K``, the Bradley-Terry heads.
        hidden: units of MLP rewards (null: linear).
    """

    def __init__(
        self, dim: int, *, num_users: int = 0, components: int = 2, hidden: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__(dim, components=components, num_users=num_users)
        self.net = reward_network(dim, components, hidden=hidden, dropout=dropout)

    def reward(self, emb: Tensor, user: Tensor | None = None) -> Tensor:
        w = self.weights(user, emb.shape[0], emb.device)
        return (self.net(emb).float() * w).sum(dim=-1)

    def _log_p(self, a: Tensor, b: Tensor, weights: Tensor) -> Tensor:
        diff = self.net(a).float() - self.net(b).float()  # [N, K]
        return torch.logsumexp(torch.log(weights.clamp_min(1e-12)) + F.logsigmoid(diff), dim=-1)

    def prefer(self, a: Tensor, b: Tensor, user: Tensor | None = None) -> Tensor:
        w = self.weights(user, a.shape[0], a.device)
        return self._log_p(a, b, w) - self._log_p(b, a, w)  # log P(a > b) - log P(b > a)

    def pair_loss(self, batch: Preferences, weights: Tensor) -> Tensor:
        chosen, rejected = _pairs(batch)
        log_p = self._log_p(chosen, rejected, weights)
        if batch.strength is None:
            return -log_p.mean()
        p = batch.strength.float()
        return -(p * log_p + (1 - p) * self._log_p(rejected, chosen, weights)).mean()


@HEADS.register("gpm", summary="GPM preference embeddings with a skew-symmetric operator: intransitive preferences")
class GPMHead(RewardHead):
    """General Preference Model (Zhang et al. 2024, "Beyond Bradley-Terry Models: A
    General Preference Model for Language Model Alignment"). Each response gets a
    preference embedding ``v`` of size ``2k`` (unit norm); ``P(a > b) = sigmoid(v_a^T R
    v_b)`` with ``R`` block-diagonal, blocks ``lambda_j [[0, -1], [1, 0]]``. ``R`` is
    skew-symmetric, so ``P(a > b) = 1 - P(b > a)`` and cycles (rock, paper, scissors)
    are representable; there is no scalar reward to rank by.

    Args:
        rank: ``k``, the number of 2-D blocks.
        hidden: units of an MLP embedding (null: linear).
    """

    scalar = False

    def __init__(self, dim: int, *, rank: int = 4, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dim)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = rank
        self.embed = reward_network(dim, 2 * rank, hidden=hidden, dropout=dropout)
        #: log of each block's eigenvalue lambda_j (learnt)
        self.log_scale = nn.Parameter(torch.zeros(rank))

    def preference_embedding(self, emb: Tensor) -> Tensor:
        """``[N, 2k]`` unit-norm preference embeddings."""
        return F.normalize(self.embed(emb).float(), dim=-1)

    def prefer(self, a: Tensor, b: Tensor, user: Tensor | None = None) -> Tensor:
        va = self.preference_embedding(a).reshape(-1, self.rank, 2)
        vb = self.preference_embedding(b).reshape(-1, self.rank, 2)
        cross = va[..., 1] * vb[..., 0] - va[..., 0] * vb[..., 1]  # [N, k]: v_a^T [[0,-1],[1,0]] v_b per block
        scale = 4.0 * self.log_scale.float().exp() * self.rank  # unit vectors: give the logits room
        return (cross * scale).sum(dim=-1)

    def loss(self, batch: Preferences) -> Tensor:
        chosen, rejected = _pairs(batch)
        s = self.prefer(chosen, rejected)
        return bradley_terry(s, torch.zeros_like(s), margin=batch.margin, strength=batch.strength)
