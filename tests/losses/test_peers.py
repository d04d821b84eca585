"""Equal to the peers on the same inputs (within 1e-5), peers installed as test-only deps.

sentence-transformers MultipleNegativesRankingLoss (+ symmetric), pytorch-metric-learning
NTXentLoss and SupConLoss, lightly NTXentLoss, DCLLoss and DCLWLoss. Gradients are
compared too: a loss with the right value and the wrong backward would still fail.
"""

from __future__ import annotations

import pytest
import torch

from contrastlib.losses import DCLLoss, DCLWLoss, InfoNCELoss, NTXentLoss, SupConLoss


def emb(n, d=16, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), requires_grad=True)


def assert_same(ours_fn, theirs_fn, *inputs):
    ours = ours_fn(*inputs)
    g_ours = torch.autograd.grad(ours, inputs)
    theirs = theirs_fn(*inputs)
    g_theirs = torch.autograd.grad(theirs, inputs)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5, rel=1e-5)
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def st_losses():
    st = pytest.importorskip("sentence_transformers.losses")
    return st


@pytest.mark.parametrize("with_negatives", [False, True])
def test_mnrl(st_losses, with_negatives):
    peer = st_losses.MultipleNegativesRankingLoss(model=None, scale=20.0)
    a, p, n = emb(8, seed=1), emb(8, seed=2), emb(8, seed=3)
    cols = (a, p, n) if with_negatives else (a, p)
    labels = torch.zeros(8)
    assert_same(
        lambda *x: InfoNCELoss(0.05)(x[0], torch.cat(x[1:])),
        lambda *x: peer.compute_loss_from_embeddings(list(x), labels),
        *cols,
    )


def test_mnrl_symmetric(st_losses):
    peer = st_losses.MultipleNegativesSymmetricRankingLoss(model=None, scale=20.0)
    a, p = emb(8, seed=4), emb(8, seed=5)
    assert_same(
        lambda a, p: InfoNCELoss(0.05, symmetric=True)(a, p),
        lambda a, p: peer.compute_loss_from_embeddings([a, p], torch.zeros(8)),
        a, p,
    )


def test_pml_ntxent():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    peer = pml.NTXentLoss(temperature=0.1)
    z0, z1 = emb(8, seed=6), emb(8, seed=7)
    labels = torch.arange(8).repeat(2)
    assert_same(lambda a, b: NTXentLoss(0.1)(a, b), lambda a, b: peer(torch.cat([a, b]), labels), z0, z1)


def test_pml_supcon():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    peer = pml.SupConLoss(temperature=0.1)
    x = emb(20, seed=8)
    labels = torch.randint(0, 5, (20,), generator=torch.Generator().manual_seed(9))
    assert_same(lambda x: SupConLoss(0.1)(x, labels=labels), lambda x: peer(x, labels), x)


def test_lightly_ntxent():
    lightly = pytest.importorskip("lightly.loss")
    peer = lightly.NTXentLoss(temperature=0.5)
    z0, z1 = emb(8, seed=10), emb(8, seed=11)
    assert_same(lambda a, b: NTXentLoss(0.5)(a, b), peer, z0, z1)


def test_lightly_dcl_and_dclw():
    lightly = pytest.importorskip("lightly.loss")
    z0, z1 = emb(8, seed=12), emb(8, seed=13)
    assert_same(lambda a, b: DCLLoss(0.1)(a, b), lightly.DCLLoss(temperature=0.1), z0, z1)
    assert_same(lambda a, b: DCLWLoss(0.1, sigma=0.5)(a, b), lightly.DCLWLoss(temperature=0.1, sigma=0.5), z0, z1)
