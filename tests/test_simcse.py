"""SimCSE module: views, dropout, and the loss it optimises."""

from __future__ import annotations

import torch

from contrastlib.losses import InfoNCELoss, info_nce
from contrastlib.methods import SimCSE


def test_unsupervised_views_differ_only_by_dropout(minilm):
    m = SimCSE(minilm, InfoNCELoss(0.05), mode="unsupervised")
    feats = minilm.tokenize(["a man plays a guitar", "two dogs run in a field"])
    m.train()
    a, p = m.embed_views([feats])
    assert not torch.allclose(a, p), "dropout is off: unsupervised SimCSE would see identical views"
    m.eval()
    a, p = m.embed_views([feats])
    torch.testing.assert_close(a, p)


def test_supervised_loss_is_info_nce_over_positives_and_negatives(minilm):
    m = SimCSE(minilm, InfoNCELoss(0.05), mode="supervised")
    m.eval()
    cols = [minilm.tokenize(x) for x in (["a", "b"], ["a!", "b!"], ["not a", "not b"])]
    a, c = m.embed_views(cols)
    assert a.shape == (2, 384) and c.shape == (4, 384)
    with torch.no_grad():
        expected = info_nce(minilm(cols[0]), torch.cat([minilm(cols[1]), minilm(cols[2])]), temperature=0.05)
    torch.testing.assert_close(m.loss_fn(a, c), expected)


def test_train_epoch_start_restores_dropout(minilm):
    m = SimCSE(minilm, InfoNCELoss(0.05))
    m.encoder.eval()
    m.on_train_epoch_start()
    assert m.encoder.training
