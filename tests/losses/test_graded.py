"""CoSENT against sentence-transformers' CoSENTLoss on the same embeddings, a loop
reference, closed forms, float64 gradients and bf16 autocast."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from contrastlib.losses import CoSENTLoss, LossInputs, cosent


def _pairs(n: int = 12, d: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)
    return a, b, torch.rand(n, generator=g, dtype=torch.float64) * 5


def _loop(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, scale: float) -> float:
    cos = F.cosine_similarity(a, b, dim=-1).tolist()
    terms = [0.0] + [scale * (cos[j] - cos[i]) for i, j in itertools.product(range(len(cos)), repeat=2)
                     if scores[i] > scores[j]]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_equals_sentence_transformers_cosent_on_the_same_embeddings(scale):
    from sentence_transformers import util
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss as Peer

    a, b, s = _pairs()
    peer = Peer.__new__(Peer)  # its loss on embeddings, without a model to own
    torch.nn.Module.__init__(peer)
    peer.scale, peer.similarity_fct = scale, util.pairwise_cos_sim
    expected = float(peer.compute_loss_from_embeddings([a, b], s))
    assert float(CoSENTLoss(1 / scale)(LossInputs(a, b, scores=s))) == pytest.approx(expected, rel=1e-12)
    assert float(cosent(a, b, s, temperature=1 / scale)) == pytest.approx(_loop(a, b, s, scale), rel=1e-12)


def test_closed_forms():
    a, b, _ = _pairs()
    assert float(cosent(a, b, torch.ones(12, dtype=torch.float64))) == 0.0  # no pair outranks another: log(1)
    # cosines in the order of the scores, far apart: every violation term vanishes
    angles = torch.linspace(0, math.pi / 2, 6, dtype=torch.float64)
    x = torch.stack([torch.ones(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)], 1)
    y = torch.stack([angles.cos(), angles.sin()], 1)
    ordered = cosent(x, y, -angles, temperature=1e-3)
    assert float(ordered) == pytest.approx(0.0, abs=1e-12)
    assert float(cosent(x, y, angles, temperature=1e-3)) > 100  # every order reversed


def test_float64_gradients():
    a, b, s = _pairs(n=6, d=4)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: cosent(x, y, s, temperature=0.1), (a, b))


def test_bf16_autocast_matches_float32():
    a, b, s = _pairs(n=64, d=32, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = cosent(a.bfloat16(), b.bfloat16(), s)
    assert low.dtype == torch.float32
    assert float(low) == pytest.approx(float(cosent(a.bfloat16().float(), b.bfloat16().float(), s)), rel=1e-5)


def test_refuses_hard_negatives_and_needs_scores():
    a, b, s = _pairs()
    with pytest.raises(ValueError, match="two views"):
        CoSENTLoss()(a, torch.cat([b, b]), scores=s)
    with pytest.raises(ValueError, match="needs scores"):
        CoSENTLoss()(a, b)
