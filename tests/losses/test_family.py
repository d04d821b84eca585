"""The loss family against plain loops, closed forms, gradcheck and half precision."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from contrastlib.losses import (
    AlignUniformLoss,
    ATILoss,
    DCLLoss,
    DCLWLoss,
    DebiasedInfoNCELoss,
    InfoNCELoss,
    MVDHELLoss,
    MVInfoNCELoss,
    NTXentLoss,
    SupConLoss,
    TripletLoss,
    alignment,
    ati_info_nce,
    chunked_info_nce,
    dcl,
    debiased_info_nce,
    info_nce,
    mv_dhel,
    mv_info_nce,
    nt_xent,
    supcon,
    uniformity,
)
from contrastlib.registry import LOSSES


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def unit(x):
    return F.normalize(x.double(), dim=-1)


def lse(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


# ----------------------------------------------------------------------------- loop references
def loop_supcon(x, labels, t):
    z = unit(x)
    n = z.shape[0]
    total, rows = 0.0, 0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        pos = [j for j in others if labels[j] == labels[i]]
        if not pos:
            continue
        denom = lse([float(z[i] @ z[j]) / t for j in others])
        total += sum(denom - float(z[i] @ z[p]) / t for p in pos) / len(pos)
        rows += 1
    return total / rows


def loop_mv(views, t, kind):
    z = unit(views)
    v, b, _ = z.shape
    s = lambda a, i, c, j: float(z[a, i] @ z[c, j]) / t  # noqa: E731
    total = 0.0
    for i in range(b):
        if kind == "mv_info_nce":
            num = lse([s(a, i, c, i) for a in range(v) for c in range(v) if a != c])
            for a in range(v):
                den = lse([s(a, i, c, j) for c in range(v) for j in range(b) if (c, j) != (a, i)])
                total += (den - num) / v
        else:
            num = lse([s(a, i, c, i) for a, c in itertools.combinations(range(v), 2)])
            den = sum(lse([s(a, i, a, j) for j in range(b) if j != i]) for a in range(v))
            total += den - num
    return total / b


def loop_dcl(z0, z1, t, sigma=None):
    a_, b_ = unit(z0), unit(z1)
    n = a_.shape[0]
    if sigma is None:
        w = [1.0] * n
    else:
        sims = [float(a_[i] @ b_[i]) / sigma for i in range(n)]
        z = lse(sims)
        w = [2 - n * math.exp(s - z) for s in sims]

    def one(a, b):
        out = 0.0
        for i in range(n):
            negs = [float(a[i] @ a[j]) / t for j in range(n) if j != i] + [float(a[i] @ b[j]) / t for j in range(n) if j != i]
            out += -w[i] * float(a[i] @ b[i]) / t + lse(negs)
        return out / n

    return 0.5 * (one(a_, b_) + one(b_, a_))


def loop_debiased(a, c, t, tau_plus, beta):
    a_, c_ = unit(a), unit(c)
    total = 0.0
    for i in range(a_.shape[0]):
        pos = math.exp(float(a_[i] @ c_[i]) / t)
        negs = [float(a_[i] @ c_[j]) / t for j in range(c_.shape[0]) if j != i]
        n = len(negs)
        imp = [math.exp(beta * x) for x in negs]
        reweighted = sum(m * math.exp(x) for m, x in zip(imp, negs, strict=True)) / (sum(imp) / n)
        ng = max((reweighted - tau_plus * n * pos) / (1 - tau_plus), n * math.exp(-1 / t))
        total += -math.log(pos / (pos + ng))
    return total / a_.shape[0]


def loop_ati(a, c, taus, rho):
    a_, c_ = unit(a), unit(c)
    total = 0.0
    for i in range(a_.shape[0]):
        t = float(taus[i])
        sp = float(a_[i] @ c_[i])
        vals = [(float(a_[i] @ c_[j]) - sp) / t for j in range(c_.shape[0]) if j != i]
        total += t * (lse(vals) - math.log(len(vals))) + t * rho
    return total / a_.shape[0]


def test_supcon_matches_loop():
    x = rand(12, 5, seed=1)
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 0, 2, 4, 4, 1, 5])
    assert supcon(x, labels, temperature=0.2).item() == pytest.approx(loop_supcon(x, labels, 0.2), rel=1e-9)


@pytest.mark.parametrize("kind,fn", [("mv_info_nce", mv_info_nce), ("mv_dhel", mv_dhel)])
@pytest.mark.parametrize("v", [2, 3, 4])
def test_multiview_matches_loop(kind, fn, v):
    views = rand(v, 5, 6, seed=v)
    assert fn(views, temperature=0.3).item() == pytest.approx(loop_mv(views, 0.3, kind), rel=1e-9)


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_dcl_matches_loop(sigma):
    z0, z1 = rand(6, 4, seed=2), rand(6, 4, seed=3)
    assert dcl(z0, z1, temperature=0.2, sigma=sigma).item() == pytest.approx(loop_dcl(z0, z1, 0.2, sigma), rel=1e-9)


@pytest.mark.parametrize("tau_plus,beta", [(0.1, 0.0), (0.0, 1.0), (0.1, 0.5)])
def test_debiased_matches_loop(tau_plus, beta):
    a, c = rand(5, 4, seed=4), rand(5, 4, seed=5)
    ours = debiased_info_nce(a, c, temperature=0.5, tau_plus=tau_plus, beta=beta)
    assert ours.item() == pytest.approx(loop_debiased(a, c, 0.5, tau_plus, beta), rel=1e-9)


def test_ati_matches_loop():
    a, c = rand(5, 4, seed=6), rand(7, 4, seed=7)
    taus = torch.tensor([0.1, 0.2, 0.05, 0.3, 0.15], dtype=torch.float64)
    assert ati_info_nce(a, c, taus, rho=0.2).item() == pytest.approx(loop_ati(a, c, taus, 0.2), rel=1e-9)


def test_alignment_uniformity_match_loops():
    x, y = rand(6, 3, seed=8), rand(6, 3, seed=9)
    xn, yn = unit(x), unit(y)
    align = sum(float((xn[i] - yn[i]).norm() ** 2) for i in range(6)) / 6
    pairs = [float(torch.exp(-2 * (xn[i] - xn[j]).norm() ** 2)) for i in range(6) for j in range(i + 1, 6)]
    assert alignment(x, y).item() == pytest.approx(align, rel=1e-6)
    assert uniformity(x).item() == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-6)


def test_triplet_matches_loop():
    a, p, n = rand(5, 4, seed=10), rand(5, 4, seed=11), rand(5, 4, seed=12)
    ref = sum(max(0.0, (1 - float(F.cosine_similarity(a[i], p[i], 0))) - (1 - float(F.cosine_similarity(a[i], n[i], 0))) + 0.3) for i in range(5)) / 5
    assert TripletLoss(margin=0.3)(a, torch.cat([p, n])).item() == pytest.approx(ref, rel=1e-6)


# ----------------------------------------------------------------------------- closed forms
def test_mv_info_nce_two_views_is_nt_xent_minus_log2():
    z0, z1 = rand(6, 5, seed=13), rand(6, 5, seed=14)
    assert mv_info_nce(torch.stack([z0, z1]), temperature=0.4).item() == pytest.approx(
        nt_xent(z0, z1, temperature=0.4).item() - math.log(2), rel=1e-9
    )


def test_orthogonal_closed_forms():
    b, t = 4, 0.5
    e = torch.eye(b, 8, dtype=torch.float64)
    assert dcl(e, e, temperature=t).item() == pytest.approx(-1 / t + math.log(2 * (b - 1)), rel=1e-9)
    v = 3
    assert mv_dhel(torch.stack([e] * v), temperature=t).item() == pytest.approx(
        v * math.log(b - 1) - math.log(math.comb(v, 2)) - 1 / t, rel=1e-9
    )
    # NT-Xent with z0 = z1 = e_i: positive score 1/t against 2B - 2 zero-score negatives.
    assert nt_xent(e, e, temperature=t).item() == pytest.approx(math.log(1 + (2 * b - 2) * math.exp(-1 / t)), rel=1e-9)


def test_special_cases_reduce_to_info_nce():
    a, c = rand(6, 5, seed=15), rand(9, 5, seed=16)
    plain = info_nce(a, c, temperature=0.3).item()
    assert debiased_info_nce(a, c, temperature=0.3, tau_plus=0.0, beta=0.0).item() == pytest.approx(plain, rel=1e-9)
    # SupCon with one positive per anchor is NT-Xent.
    z0, z1 = rand(5, 4, seed=17), rand(5, 4, seed=18)
    labels = torch.arange(5).repeat(2)
    assert supcon(torch.cat([z0, z1]), labels, temperature=0.3).item() == pytest.approx(
        nt_xent(z0, z1, temperature=0.3).item(), rel=1e-9
    )
    # ATI for one anchor with temperature t and rho = 0 is t * (log(e^L - 1) - log N), where
    # L = log(1 + sum_n e^{(s_n - s_p)/t}) is that anchor's InfoNCE and N its negatives.
    one, n_neg, t = a[:1], c.shape[0] - 1, 0.3
    nce = info_nce(one, c, temperature=t).item()
    ati = ati_info_nce(one, c, torch.tensor([t], dtype=torch.float64), rho=0.0).item()
    assert ati == pytest.approx(t * (math.log(math.expm1(nce)) - math.log(n_neg)), rel=1e-9)


def test_chunked_equals_plain_with_every_option():
    a = rand(37, 8, seed=19).requires_grad_()
    c = rand(37, 8, seed=20).requires_grad_()
    q = rand(11, 8, seed=21)
    for kwargs in ({}, {"symmetric": True}, {"extra_negatives": q}):
        ref = info_nce(a, c, temperature=0.07, **kwargs)
        ours = chunked_info_nce(a, c, temperature=0.07, chunk_size=5, **kwargs)
        g_ref = torch.autograd.grad(ref, (a, c))
        g_ours = torch.autograd.grad(ours, (a, c))
        assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
        for x, y in zip(g_ours, g_ref, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)
    # NT-Xent style: anchors = candidates, self excluded, positive = other view.
    z = torch.cat([a, c])
    n = a.shape[0]
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    mask = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    mask[torch.arange(2 * n), pos] = True
    excl = torch.eye(2 * n, dtype=torch.bool)
    ref = info_nce(z, z, positive_mask=mask, exclude_mask=excl, temperature=0.1)
    ours = chunked_info_nce(z, z, positive_index=pos, exclude_index=torch.arange(2 * n), temperature=0.1, chunk_size=7)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    module = InfoNCELoss(0.1, chunk_size=7)
    assert module(z, z, positive_mask=mask, exclude_mask=excl).item() == pytest.approx(ref.item(), rel=1e-12)


# ----------------------------------------------------------------------------- modules, gradcheck, precision
MODULES = {
    "info_nce": lambda: InfoNCELoss(0.2),
    "info_nce_sym_chunked": lambda: InfoNCELoss(0.2, symmetric=True, chunk_size=3),
    "nt_xent": lambda: NTXentLoss(0.2),
    "nt_xent_chunked": lambda: NTXentLoss(0.2, chunk_size=3),
    "supcon": lambda: SupConLoss(0.2),
    "mv_info_nce": lambda: MVInfoNCELoss(0.2),
    "mv_dhel": lambda: MVDHELLoss(0.2),
    "dcl": lambda: DCLLoss(0.2),
    "dclw": lambda: DCLWLoss(0.2),
    "debiased": lambda: DebiasedInfoNCELoss(0.2, tau_plus=0.1, beta=0.5),
    "align_uniform": lambda: AlignUniformLoss(),
    "triplet": lambda: TripletLoss(margin=0.3),
}


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"dclw"}))
def test_gradcheck_float64(name):
    loss = MODULES[name]()
    a = rand(5, 4, seed=22).requires_grad_()
    c = rand(5, 4, seed=23).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: loss(a, c), (a, c))


def test_dclw_gradcheck_with_weights_held_fixed():
    """DCLW's weights are constants in the backward (as in lightly): check with them fixed."""
    from contrastlib.losses import negative_von_mises_fisher_weights

    a = rand(5, 4, seed=22).requires_grad_()
    c = rand(5, 4, seed=23).requires_grad_()
    w = negative_von_mises_fisher_weights(F.normalize(a, dim=-1), F.normalize(c, dim=-1), 0.5)
    assert torch.autograd.gradcheck(lambda a, c: dcl(a, c, temperature=0.2, weights=w), (a, c))
    assert DCLWLoss(0.2, sigma=0.5)(a, c).item() == pytest.approx(dcl(a, c, temperature=0.2, weights=w).item(), rel=1e-12)


def test_ati_gradcheck_including_temperatures():
    a = rand(4, 3, seed=24).requires_grad_()
    c = rand(6, 3, seed=25).requires_grad_()
    taus = torch.tensor([0.2, 0.3, 0.15, 0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c, t: ati_info_nce(a, c, t, rho=0.1), (a, c, taus))


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_temperature_half_precision_is_finite(name, dtype):
    loss = MODULES[name]()
    if hasattr(loss, "temperature") and name not in ("align_uniform", "triplet"):
        loss.temperature.set_(0.01)
    a32 = rand(32, 16, seed=26, dtype=torch.float32)
    c32 = a32 + 0.05 * rand(32, 16, seed=27, dtype=torch.float32)
    a, c = a32.to(dtype).requires_grad_(), c32.to(dtype).requires_grad_()
    out = loss(a, c)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(a.grad).all() and torch.isfinite(c.grad).all()
    ref = loss(a32, c32)
    assert out.item() == pytest.approx(ref.item(), abs=0.1 * max(1.0, abs(ref.item())))


def test_learnable_temperature_gets_gradients_and_is_clamped():
    loss = InfoNCELoss(0.07, learnable_temperature=True)
    a, c = rand(6, 4, seed=28, dtype=torch.float32), rand(6, 4, seed=29, dtype=torch.float32)
    loss(a, c).backward()
    assert loss.temperature.log_scale.grad is not None and loss.temperature.log_scale.grad != 0
    with torch.no_grad():
        loss.temperature.log_scale.fill_(20.0)
    assert float(loss.temperature().detach()) == pytest.approx(0.01)


def test_ati_module_learns_per_sample_temperatures():
    loss = ATILoss(num_samples=10, temperature=0.2)
    a, c = rand(4, 3, seed=30, dtype=torch.float32), rand(4, 3, seed=31, dtype=torch.float32)
    ids = torch.tensor([1, 3, 5, 7])
    loss(a, c, ids=ids).backward()
    grad = loss.tau.grad
    assert grad is not None and (grad[ids] != 0).all() and (grad[[0, 2, 4]] == 0).all()
    loss.step_own_parameters()
    assert (loss.tau[ids] != 0.2).all() and (loss.tau[[0, 2, 4]] == 0.2).all()
    assert float(loss.tau.min()) >= 0.01


def test_every_loss_is_registered():
    assert {
        "info_nce", "nt_xent", "supcon", "mv_info_nce", "mv_dhel", "dcl", "dclw", "debiased", "ati",
        "align_uniform", "triplet",
    } <= set(LOSSES.names())


def test_two_view_losses_reject_hard_negatives():
    a, c = rand(4, 3), rand(8, 3)
    with pytest.raises(ValueError, match="two views"):
        NTXentLoss()(a, c)
    with pytest.raises(ValueError, match="two views"):
        MVDHELLoss()(a, c)


def test_chunked_modules_equal_plain_modules():
    z0, z1 = rand(13, 6, seed=40).requires_grad_(), rand(13, 6, seed=41).requires_grad_()
    for plain, chunked in [
        (NTXentLoss(0.3), NTXentLoss(0.3, chunk_size=4)),
        (InfoNCELoss(0.1, symmetric=True), InfoNCELoss(0.1, symmetric=True, chunk_size=4)),
        (InfoNCELoss(0.1), InfoNCELoss(0.1, chunk_size=5)),
    ]:
        ref, ours = plain(z0, z1), chunked(z0, z1)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
        for x, y in zip(torch.autograd.grad(ours, (z0, z1)), torch.autograd.grad(ref, (z0, z1)), strict=True):
            torch.testing.assert_close(x, y)
