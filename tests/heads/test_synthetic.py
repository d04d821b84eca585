"""Heads on synthetic preferences whose ground truth is known."""

from __future__ import annotations

import math

import pytest
import torch

from contrastlib.heads import (
    BradleyTerryHead,
    GPMHead,
    PALHead,
    Preferences,
    RobustBradleyTerryHead,
    fit_head,
)
from contrastlib.registry import HEADS


def _accuracy(head: torch.nn.Module, batch: Preferences, user: torch.Tensor | None = None) -> float:
    with torch.no_grad():
        logit = head.prefer(batch.chosen, batch.rejected, user)
    return float((logit > 0).float().mean())


def _cyclic(n: int, seed: int, dim: int = 12) -> tuple[Preferences, torch.Tensor]:
    """Responses on a circle: a beats b when b lies within half a turn ahead of a. Every
    response wins exactly half its comparisons, so no scalar order explains them."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(2, dim, generator=torch.Generator().manual_seed(99))
    theta = torch.rand(n, generator=g) * 2 * math.pi
    emb = torch.stack([theta.cos(), theta.sin()], dim=1) @ mix + 0.01 * torch.randn(n, dim, generator=g)
    a, b = torch.randint(0, n, (2, 4 * n), generator=g)
    a_wins = torch.sin(theta[b] - theta[a]) > 0
    chosen = torch.where(a_wins[:, None], emb[a], emb[b])
    rejected = torch.where(a_wins[:, None], emb[b], emb[a])
    return Preferences("pairs", chosen=chosen, rejected=rejected), emb


def test_cyclic_preferences_gpm_near_perfect_bradley_terry_near_chance() -> None:
    torch.manual_seed(0)
    train, _ = _cyclic(400, seed=1)
    test, _ = _cyclic(200, seed=2)
    gpm, bt = GPMHead(12, rank=1), BradleyTerryHead(12)
    fit_head(gpm, train, steps=400, lr=0.05)
    fit_head(bt, train, steps=400, lr=0.05)
    assert _accuracy(gpm, test) >= 0.95
    assert 0.35 <= _accuracy(bt, test) <= 0.65
    # skew-symmetry: P(a > b) = 1 - P(b > a), and a response ties with itself
    with torch.no_grad():
        ab, ba = gpm.prefer(test.chosen, test.rejected), gpm.prefer(test.rejected, test.chosen)
        assert torch.allclose(ab, -ba, atol=1e-5)
        assert gpm.prefer(test.chosen, test.chosen).abs().max() < 1e-5


def _two_groups(n_users: int, pairs_per_user: int, seed: int, dim: int = 10) -> tuple[Preferences, torch.Tensor]:
    """Half the users prefer along w, the other half along -w."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=torch.Generator().manual_seed(7))
    user = torch.arange(n_users).repeat_interleave(pairs_per_user)
    sign = torch.where(user % 2 == 0, 1.0, -1.0)
    a, b = torch.randn(len(user), dim, generator=g), torch.randn(len(user), dim, generator=g)
    a_wins = sign * ((a - b) @ w) > 0
    chosen = torch.where(a_wins[:, None], a, b)
    rejected = torch.where(a_wins[:, None], b, a)
    return Preferences("pairs", chosen=chosen, rejected=rejected, user=user), sign


@pytest.mark.parametrize("name", ["pal", "bt_mixture"])
def test_two_opposite_groups_per_user_heads_beat_one_bradley_terry(name: str) -> None:
    torch.manual_seed(0)
    train, _ = _two_groups(20, 40, seed=1)
    test, _ = _two_groups(20, 40, seed=2)
    head = HEADS.get(name)(10, num_users=20, **({"prototypes": 2} if name == "pal" else {"components": 2}))
    bt = BradleyTerryHead(10)
    fit_head(head, train, steps=500, lr=0.05)
    fit_head(bt, train, steps=500, lr=0.05)
    per_user, single = _accuracy(head, test, test.user), _accuracy(bt, test)
    assert per_user >= 0.9
    assert single <= 0.65
    assert per_user > single + 0.25


def test_pal_adapts_to_a_new_user_from_a_handful_of_pairs() -> None:
    torch.manual_seed(0)
    train, _ = _two_groups(20, 40, seed=1)
    pal = PALHead(10, num_users=20, prototypes=2)
    fit_head(pal, train, steps=500, lr=0.05)
    # a new user of the "odd" group (prefers along -w): 8 pairs to learn from
    few, _ = _two_groups(2, 8, seed=3)
    few = few.select(few.user == 1)
    held, _ = _two_groups(2, 200, seed=4)
    held = held.select(held.user == 1)
    shared_before = {k: v.clone() for k, v in pal.state_dict().items() if k != "user_logits"}
    unknown = _accuracy(pal, held, torch.full((len(held),), -1))
    uid = pal.add_user(few, steps=200, lr=0.2)
    assert uid == 20 and pal.num_users == 21
    adapted = _accuracy(pal, held, torch.full((len(held),), uid))
    assert adapted >= 0.9 > unknown
    for k, v in pal.state_dict().items():  # only the new user's weights were learnt
        if k != "user_logits":
            assert torch.equal(v, shared_before[k])


def test_known_flip_rate_robust_head_recovers_clean_preferences_better() -> None:
    """Clean labels from a Bradley-Terry model, then 30% flipped. Plain Bradley-Terry
    learns rewards shrunk towards zero (its probabilities are off); the corrected loss
    learns the clean model's scale, and ranks at least as well."""
    torch.manual_seed(0)
    dim, n, eps = 8, 6000, 0.3
    g = torch.Generator().manual_seed(11)
    w = torch.randn(dim, generator=g)
    a, b = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    clean_p = torch.sigmoid((a - b) @ w)
    a_wins = torch.rand(n, generator=g) < clean_p
    flip = torch.rand(n, generator=g) < eps
    noisy = a_wins ^ flip
    chosen = torch.where(noisy[:, None], a, b)
    rejected = torch.where(noisy[:, None], b, a)
    train = Preferences("pairs", chosen=chosen, rejected=rejected)
    robust, plain = RobustBradleyTerryHead(dim, flip_rate=eps), BradleyTerryHead(dim)
    fit_head(robust, train, steps=600, lr=0.05)
    fit_head(plain, train, steps=600, lr=0.05)

    ta, tb = torch.randn(4000, dim, generator=g), torch.randn(4000, dim, generator=g)
    truth = torch.sigmoid((ta - tb) @ w)
    with torch.no_grad():
        p_robust = torch.sigmoid(robust.prefer(ta, tb))
        p_plain = torch.sigmoid(plain.prefer(ta, tb))
    err_robust = (p_robust - truth).abs().mean().item()
    err_plain = (p_plain - truth).abs().mean().item()
    assert err_robust < 0.5 * err_plain
    acc = lambda p: ((p > 0.5) == (truth > 0.5)).float().mean().item()  # noqa: E731
    assert acc(p_robust) >= acc(p_plain) - 0.01
    assert acc(p_robust) >= 0.95


def _linear_truth(kind: str, n: int, seed: int, *, users: int = 0, dim: int = 6) -> Preferences:
    """``n`` rows of one data kind, every label from one linear reward ``w . x`` (every user
    agrees): pairs won by the higher reward, lists scored by it, thumbs up where it is
    positive."""
    w = torch.randn(dim, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(seed)
    if kind == "pairs":
        a, b = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
        a_wins = ((a - b) @ w > 0)[:, None]
        user = torch.randint(0, users, (n,), generator=g) if users else None
        return Preferences("pairs", chosen=torch.where(a_wins, a, b), rejected=torch.where(a_wins, b, a), user=user)
    if kind == "lists":
        responses = torch.randn(n, 3, dim, generator=g)
        return Preferences("lists", responses=responses, scores=responses @ w, mask=torch.ones(n, 3, dtype=torch.bool))
    responses = torch.randn(n, dim, generator=g)
    return Preferences("unpaired", responses=responses, label=(responses @ w > 0).float())


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_learns_a_linear_preference_from_its_data_kind(name: str) -> None:
    """Each head on its own data kind: one backward reaches every weight (biases drop out
    of reward differences); training lowers its loss; and it then ranks held-out pairs
    by the reward behind the data (a head whose loss read the order backwards, or
    ignored a weight, fails here)."""
    torch.manual_seed(0)
    cls = HEADS.get(name)
    head = cls(6, **({"num_users": 3} if cls.per_user else {}))
    train = _linear_truth(cls.trains_on, 256, seed=1, users=3 if cls.per_user else 0)
    head.train()
    loss = head.loss(train)
    assert math.isfinite(float(loss))
    loss.backward()
    for n, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert n.endswith("bias") or p.grad.abs().sum() > 0, n
    head.zero_grad()
    history = fit_head(head, train, steps=150, lr=0.05)
    assert all(math.isfinite(x) for x in history)
    assert history[-1] < history[0], (history[0], history[-1])
    test = _linear_truth("pairs", 400, seed=2)
    accuracy = _accuracy(head, test)
    assert accuracy >= 0.9, accuracy
    assert head.__doc__ and "20" in head.__doc__  # a paper with its year


def _two_objectives(n: int, seed: int, dim: int = 8) -> tuple[Preferences, Preferences, Preferences]:
    """Objective 0 orders responses along w0, objective 1 along an independent w1: (mixed
    training pairs tagged with their objective, objective-0 test pairs, objective-1 test pairs)."""
    w = torch.randn(2, dim, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, dim, generator=g)
    a, b = torch.randint(0, n, (2, 4 * n), generator=g)
    objective = torch.arange(4 * n) % 2
    score = emb @ w.T  # [n, 2]
    a_wins = score[a, objective] > score[b, objective]
    chosen = torch.where(a_wins[:, None], emb[a], emb[b])
    rejected = torch.where(a_wins[:, None], emb[b], emb[a])
    mixed = Preferences("pairs", chosen=chosen, rejected=rejected, objective=objective)
    each = [Preferences("pairs", chosen=chosen[objective == o], rejected=rejected[objective == o]) for o in (0, 1)]
    return mixed, each[0], each[1]


def test_multi_objective_learns_each_objective_and_follows_the_chosen_direction() -> None:
    """Pairs judged on two independent objectives: each component of the vector reward
    ranks its own objective's pairs; one Bradley-Terry reward on the same pairs cannot
    rank both; pointing the direction at one objective ranks by that objective."""
    from contrastlib.heads import MultiObjectiveHead

    torch.manual_seed(0)
    train, _, _ = _two_objectives(300, seed=1)
    _, test0, test1 = _two_objectives(200, seed=2)
    multi, bt = MultiObjectiveHead(8, objectives=["a", "b"]), BradleyTerryHead(8)
    fit_head(multi, train, steps=400, lr=0.05)
    fit_head(bt, Preferences("pairs", chosen=train.chosen, rejected=train.rejected), steps=400, lr=0.05)
    with torch.no_grad():
        for o, test in enumerate((test0, test1)):
            component = multi.rewards(test.chosen)[:, o] - multi.rewards(test.rejected)[:, o]
            acc = float((component > 0).float().mean())
            assert acc >= 0.93, (o, acc)
            assert acc >= _accuracy(bt, test) + 0.1
            multi.set_direction([1.0 - o, float(o)])
            assert _accuracy(multi, test) == pytest.approx(acc)
