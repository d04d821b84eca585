"""SimCSE module: views, dropout, and the loss it optimises (on the tiny BERT: a fresh
encoder per test, so switching it to eval mode here reaches no other test)."""

from __future__ import annotations

import torch

from contrastlib.data import TextBatch
from contrastlib.losses import InfoNCELoss, info_nce
from contrastlib.methods import SimCSE


def batch_of(encoder, *columns):
    return TextBatch([encoder.tokenize(c) for c in columns], torch.arange(len(columns[0])))


def embed(m, batch):
    return m.pair([m.encoder(v) for v in m.views(batch)])


def test_unsupervised_views_differ_only_by_dropout(tiny):
    m = SimCSE(tiny, InfoNCELoss(0.05), mode="unsupervised")
    batch = batch_of(tiny, ["a man plays a guitar", "two dogs run in a field"])
    m.train()
    a, p = embed(m, batch)
    assert not torch.allclose(a, p), "dropout is off: unsupervised SimCSE would see identical views"
    m.eval()
    a, p = embed(m, batch)
    torch.testing.assert_close(a, p)


def test_supervised_loss_is_info_nce_over_positives_and_negatives(tiny):
    m = SimCSE(tiny, InfoNCELoss(0.05), mode="supervised")
    m.eval()
    batch = batch_of(tiny, ["a", "b"], ["a!", "b!"], ["not a", "not b"])
    a, c = embed(m, batch)
    assert a.shape == (2, tiny.dim) and c.shape == (4, tiny.dim)
    with torch.no_grad():
        cols = batch.columns
        expected = info_nce(tiny(cols[0]), torch.cat([tiny(cols[1]), tiny(cols[2])]), temperature=0.05)
        torch.testing.assert_close(m.contrast([tiny(v) for v in m.views(batch)], batch), expected)


def test_train_epoch_start_restores_dropout(tiny):
    m = SimCSE(tiny, InfoNCELoss(0.05))
    m.encoder.eval()
    m.on_train_epoch_start()
    assert m.encoder.training


def test_a_copy_of_the_positive_among_the_negatives_is_not_a_negative(tiny):
    """The mined and cluster samplers put related rows together, so row 1's mined negative
    can be row 0's positive. The collator's text keys keep it out of row 0's softmax."""
    from contrastlib.data.collate import HFTokenize, TextTupleCollator

    m = SimCSE(tiny, InfoNCELoss(0.05), mode="supervised")
    m.eval()
    rows = [("a cat sits", "a cat is sitting", "a dog barks"), ("stocks fell", "markets dropped", "a cat is sitting")]
    batch = TextTupleCollator(HFTokenize(tiny.tokenizer, 64))(list(enumerate(rows)))
    assert batch.text_keys is not None and batch.text_keys[1, 0] == batch.text_keys[2, 1]
    with torch.no_grad():
        emb = [tiny(v) for v in m.views(batch)]
        got = m.contrast(emb, batch)
        a, c = emb[0], torch.cat(emb[1:])
        exclude = torch.zeros(2, 4, dtype=torch.bool)
        exclude[0, 3] = True  # candidate 3 (row 1's negative) is row 0's positive
        expected = info_nce(a, c, exclude_mask=exclude, temperature=0.05)
        unmasked = info_nce(a, c, temperature=0.05)
    torch.testing.assert_close(got, expected)
    assert float(unmasked - got) > 0.1
