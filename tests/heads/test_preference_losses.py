"""Preference losses against closed forms, loops and the InfoNCE core."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from contrastlib.losses.functional import cosine_scores, info_nce
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


def test_bradley_terry_closed_form_margin_and_soft_labels() -> None:
    g = torch.Generator().manual_seed(0)
    c, r, m = torch.randn(16, generator=g), torch.randn(16, generator=g), torch.rand(16, generator=g)
    assert torch.allclose(bradley_terry(c, r), -F.logsigmoid(c - r).mean(), atol=1e-6)
    assert torch.allclose(bradley_terry(c, r, margin=m), -F.logsigmoid(c - r - m).mean(), atol=1e-6)
    p = torch.rand(16, generator=g)
    expected = -(p * F.logsigmoid(c - r) + (1 - p) * F.logsigmoid(r - c)).mean()
    assert torch.allclose(bradley_terry(c, r, strength=p), expected, atol=1e-6)


def _pl_loop(scores: list[float], order: list[int]) -> float:
    total, left = 0.0, list(order)
    while len(left) > 1:
        first = left[0]
        total -= scores[first] - math.log(sum(math.exp(scores[j]) for j in left))
        left = left[1:]
    return total


def test_plackett_luce_matches_the_product_of_choices_with_padding() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 5, generator=g, dtype=torch.float64)
    target = torch.randn(3, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    order = ranking_order(target, mask)
    got = plackett_luce(scores, order, mask, reduction="none")
    for b in range(3):
        n = int(mask[b].sum())
        real = [int(i) for i in order[b] if mask[b, i]][:n]
        assert got[b].item() == pytest.approx(_pl_loop(scores[b].tolist(), real), abs=1e-9)


def test_plackett_luce_with_two_items_is_bradley_terry() -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(32, 2, generator=g)
    order = torch.tensor([[0, 1]]).expand(32, 2)
    assert torch.allclose(plackett_luce(s, order), bradley_terry(s[:, 0], s[:, 1]), atol=1e-6)


def test_infonca_with_one_hot_rewards_is_info_nce() -> None:
    g = torch.Generator().manual_seed(3)
    anchors, candidates = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    tau = 0.1
    scores = cosine_scores(anchors, candidates) / tau
    one_hot = torch.eye(8) * 1e4  # softmax(one-hot * 1e4) is exactly one-hot in float32
    assert torch.allclose(infonca(scores, one_hot), info_nce(anchors, candidates, temperature=tau), atol=1e-5)


def test_infonca_and_nca_against_loops() -> None:
    g = torch.Generator().manual_seed(4)
    s, r = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    alpha = 0.5
    want_infonca, want_nca = [], []
    for b in range(4):
        idx = [i for i in range(3) if mask[b, i]]
        w = torch.softmax(r[b, idx] / alpha, dim=0)
        logp = torch.log_softmax(s[b, idx], dim=0)
        want_infonca.append(-(w * logp).sum())
        want_nca.append(-(w * F.logsigmoid(s[b, idx])).sum() - F.logsigmoid(-s[b, idx]).sum() / len(idx))
    assert torch.allclose(infonca(s, r, mask, alpha=alpha, reduction="none"), torch.stack(want_infonca))
    assert torch.allclose(nca(s, r, mask, alpha=alpha, reduction="none"), torch.stack(want_nca))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.45])
def test_robust_bradley_terry_is_unbiased(eps: float) -> None:
    """Averaged over the label noise, the corrected loss is the clean loss."""
    d = torch.linspace(-4, 4, 41, dtype=torch.float64)
    zero = torch.zeros_like(d)
    kept = robust_bradley_terry(d, zero, flip_rate=eps, reduction="none")
    flipped = robust_bradley_terry(-d, zero, flip_rate=eps, reduction="none")
    assert torch.allclose((1 - eps) * kept + eps * flipped, -F.logsigmoid(d))
    with pytest.raises(ValueError, match="flip_rate"):
        robust_bradley_terry(d, zero, flip_rate=0.5)


def test_gaussian_preference_is_thurstone() -> None:
    from scipy.stats import norm

    g = torch.Generator().manual_seed(5)
    mc, mr = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    vc, vr = torch.rand(10, generator=g, dtype=torch.float64), torch.rand(10, generator=g, dtype=torch.float64)
    want = -norm.logcdf(((mc - mr) / torch.sqrt(1 + vc + vr)).numpy())
    got = gaussian_preference(mc, vc, mr, vr, reduction="none").numpy()
    assert got == pytest.approx(want, abs=1e-9)


def test_bco_is_shifted_binary_cross_entropy() -> None:
    r, y = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    want = -(y * F.logsigmoid(r - 0.3) + (1 - y) * F.logsigmoid(-(r - 0.3))).mean()
    assert torch.allclose(bco(r, y, delta=0.3), want, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_preference_losses_compute_in_float32_under_autocast(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(6)
    c, r = torch.randn(64, generator=g) * 20, torch.randn(64, generator=g) * 20
    lists, scores = torch.randn(8, 4, generator=g) * 20, torch.randn(8, 4, generator=g)
    order = ranking_order(scores)
    plain = [bradley_terry(c, r), plackett_luce(lists, order), infonca(lists, scores), nca(lists, scores),
             robust_bradley_terry(c, r, flip_rate=0.2)]
    with torch.autocast("cpu", dtype=dtype):
        half = [bradley_terry(c.to(dtype), r.to(dtype)), plackett_luce(lists.to(dtype), order),
                infonca(lists.to(dtype), scores.to(dtype)), nca(lists.to(dtype), scores.to(dtype)),
                robust_bradley_terry(c.to(dtype), r.to(dtype), flip_rate=0.2)]
    for a, b in zip(plain, half, strict=True):
        assert b.dtype == torch.float32
        assert torch.isfinite(b)
        # the only difference is the inputs' rounding to half precision
        assert b.item() == pytest.approx(a.item(), rel=0.05, abs=0.05)


def test_plackett_luce_is_the_likelihood_of_permutations() -> None:
    """Its probabilities over all orderings of a list sum to one."""
    s = torch.tensor([[0.3, -1.2, 2.0, 0.1]], dtype=torch.float64)
    total = sum(
        math.exp(-plackett_luce(s, torch.tensor([perm])).item()) for perm in itertools.permutations(range(4))
    )
    assert total == pytest.approx(1.0, abs=1e-9)
