"""InfoNCE against a plain loop, closed forms, gradcheck and half precision."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastlib.losses import InfoNCELoss, info_nce, soft_cross_entropy


def loop_info_nce(a, c, pos, temperature, extra=None, exclude=None):
    """One anchor at a time, Python floats: mean over anchors of mean over positives of -log p."""
    a = F.normalize(a.double(), dim=-1)
    c = F.normalize(c.double(), dim=-1)
    cands = c if extra is None else torch.cat([c, F.normalize(extra.double(), dim=-1)])
    total, rows = 0.0, 0
    for i in range(a.shape[0]):
        scores = [float(a[i] @ cands[j]) / temperature for j in range(cands.shape[0])]
        keep = [j for j in range(len(scores)) if not (exclude is not None and j < c.shape[0] and exclude[i, j])]
        log_z = math.log(sum(math.exp(scores[j]) for j in keep))
        positives = [j for j in range(c.shape[0]) if pos[i, j] and j in keep]
        if not positives:
            continue
        total += sum(log_z - scores[j] for j in positives) / len(positives)
        rows += 1
    return total / rows


@pytest.mark.parametrize("b,extra_c,k", [(4, 0, 0), (6, 6, 0), (5, 5, 7), (3, 0, 4)])
def test_matches_loop_reference(b, extra_c, k):
    g = torch.Generator().manual_seed(b * 10 + k)
    a = torch.randn(b, 8, generator=g)
    c = torch.randn(b + extra_c, 8, generator=g)
    extra = torch.randn(k, 8, generator=g) if k else None
    pos = torch.eye(b, b + extra_c, dtype=torch.bool)
    ours = info_nce(a, c, extra_negatives=extra, temperature=0.1)
    assert ours.item() == pytest.approx(loop_info_nce(a, c, pos, 0.1, extra), rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 6),
    c_extra=st.integers(0, 5),
    t=st.floats(0.02, 2.0),
    seed=st.integers(0, 10_000),
)
def test_multi_positive_and_exclusion_match_loop(b, c_extra, t, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, 5, generator=g, dtype=torch.float64)
    c = torch.randn(b + c_extra, 5, generator=g, dtype=torch.float64)
    pos = torch.rand(b, b + c_extra, generator=g) < 0.4
    pos[torch.arange(b), torch.arange(b)] = True
    exclude = (torch.rand(b, b + c_extra, generator=g) < 0.2) & ~pos
    ours = info_nce(a, c, positive_mask=pos, exclude_mask=exclude, temperature=t)
    assert ours.item() == pytest.approx(loop_info_nce(a, c, pos, t, exclude=exclude), rel=1e-9)


def test_closed_form_orthogonal_embeddings():
    # anchor i == candidate i == e_i: positive score 1/t, every negative 0.
    n, t = 6, 0.5
    e = torch.eye(n)
    expected = math.log(1 + (n - 1) * math.exp(-1 / t))
    assert info_nce(e, e, temperature=t).item() == pytest.approx(expected, rel=1e-5)
    assert info_nce(e.double(), e.double(), temperature=0.1).item() == pytest.approx(
        math.log(1 + (n - 1) * math.exp(-10)), rel=1e-9
    )


def test_closed_form_identical_views_simclr():
    # NT-Xent with 2N views that are all the same vector: every score equal, so each of the
    # 2N anchors has 2N - 1 equally likely candidates: loss = -log(1 / (2N - 1)).
    n = 5
    z = torch.ones(2 * n, 4)
    pos = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    idx = torch.arange(n)
    pos[idx, idx + n] = True
    pos[idx + n, idx] = True
    self_mask = torch.eye(2 * n, dtype=torch.bool)
    loss = info_nce(z, z, positive_mask=pos, exclude_mask=self_mask, temperature=0.5)
    assert loss.item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_symmetric_equals_mean_of_both_directions():
    g = torch.Generator().manual_seed(0)
    a, p = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    fwd = info_nce(a, p, temperature=0.2)
    bwd = info_nce(p, a, temperature=0.2)
    assert info_nce(a, p, temperature=0.2, symmetric=True).item() == pytest.approx(
        (fwd.item() + bwd.item()) / 2, rel=1e-6
    )


def test_symmetric_with_hard_negatives_scores_only_positives_backwards():
    g = torch.Generator().manual_seed(1)
    a, p, n = (torch.randn(4, 8, generator=g) for _ in range(3))
    fwd = info_nce(a, torch.cat([p, n]), temperature=0.1)
    bwd = info_nce(p, a, temperature=0.1)
    sym = info_nce(a, torch.cat([p, n]), temperature=0.1, symmetric=True)
    assert sym.item() == pytest.approx((fwd.item() + bwd.item()) / 2, rel=1e-6)


def test_extra_negatives_equal_appended_candidates():
    g = torch.Generator().manual_seed(2)
    a, c, q = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(9, 8, generator=g)
    assert info_nce(a, c, extra_negatives=q).item() == pytest.approx(
        info_nce(a, torch.cat([c, q])).item(), rel=1e-6
    )


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    c = torch.randn(7, 6, dtype=torch.float64, generator=g, requires_grad=True)
    q = torch.randn(3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, c, q: info_nce(a, c, extra_negatives=q, temperature=0.3, symmetric=True), (a, c, q)
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_low_temperature_stays_finite(dtype):
    g = torch.Generator().manual_seed(4)
    a32, c32 = torch.randn(64, 32, generator=g), torch.randn(128, 32, generator=g)
    c32[:64] = a32 + 0.01 * torch.randn(64, 32, generator=g)
    a = a32.to(dtype).requires_grad_()
    c = c32.to(dtype).requires_grad_()
    loss = info_nce(a, c, temperature=0.01, symmetric=True)
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert torch.isfinite(a.grad).all() and torch.isfinite(c.grad).all()
    ref = info_nce(a32, c32, temperature=0.01, symmetric=True)
    assert loss.item() == pytest.approx(ref.item(), abs=0.05 * max(1.0, ref.item()))


def test_fully_excluded_row_is_finite_and_ignored():
    scores = torch.tensor([[1.0, 2.0], [0.5, 0.1]])
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    loss = soft_cross_entropy(scores, target, exclude=torch.tensor([[False, False], [True, True]]))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(-torch.log_softmax(scores[0], 0)[0].item())


def test_module_matches_function_and_validates():
    g = torch.Generator().manual_seed(5)
    a, c = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    assert InfoNCELoss(0.07)(a, c).item() == info_nce(a, c, temperature=0.07).item()
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)
    with pytest.raises(ValueError, match="embedding sizes"):
        info_nce(a, torch.randn(3, 5))
    with pytest.raises(ValueError, match="positive_mask"):
        info_nce(a, c, positive_mask=torch.ones(2, 3, dtype=torch.bool))


def test_candidate_keys_drop_copies_of_the_positive_against_a_loop():
    """A candidate with the same key (text) as an anchor's positive leaves that anchor's
    softmax; for the other anchors it stays a negative."""
    g = torch.Generator().manual_seed(3)
    a, c = torch.randn(4, 8, generator=g), torch.randn(8, 8, generator=g)
    keys = torch.tensor([0, 1, 2, 3, 2, 10, 0, 11])  # candidate 4 copies positive 2, candidate 6 positive 0
    c[4], c[6] = c[2], c[0]  # same text, same embedding
    pos = torch.eye(4, 8, dtype=torch.bool)
    exclude = torch.zeros(4, 8, dtype=torch.bool)
    exclude[2, 4] = exclude[0, 6] = True
    got = InfoNCELoss(0.1)(a, c, candidate_keys=keys)
    assert got.item() == pytest.approx(loop_info_nce(a, c, pos, 0.1, exclude=exclude), rel=1e-6)
    # without keys (or with masking off) the copies count as negatives: a different loss
    plain = InfoNCELoss(0.1)(a, c)
    assert plain.item() == pytest.approx(loop_info_nce(a, c, pos, 0.1), rel=1e-6)
    assert plain.item() - got.item() > 0.1
    assert InfoNCELoss(0.1, mask_duplicates=False)(a, c, candidate_keys=keys).item() == pytest.approx(plain.item())


def test_mask_duplicates_is_refused_with_the_streamed_loss():
    with pytest.raises(ValueError, match="mask_duplicates"):
        InfoNCELoss(0.1, chunk_size=4, mask_duplicates=True)
    assert InfoNCELoss(0.1, chunk_size=4).mask_duplicates is False


def test_duplicate_mask_with_several_positives_against_the_pairwise_definition():
    """Candidate j is masked for anchor i iff it shares a key with some positive of i and
    is not itself a positive of i (checked against the C x C pairwise form)."""
    from contrastlib.losses.info_nce_loss import duplicate_mask

    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        b = int(torch.randint(1, 6, (1,), generator=g))
        c = b + int(torch.randint(0, 8, (1,), generator=g))
        keys = torch.randint(0, 5, (c,), generator=g)
        pos = torch.rand(b, c, generator=g) < 0.3
        same = keys[:, None] == keys[None, :]
        expected = ((pos.float() @ same.float()) > 0) & ~pos
        assert torch.equal(duplicate_mask(pos, keys), expected)
