"""Pooling always uses the attention mask: padded batches give the unpadded answer."""

from __future__ import annotations

import torch

from contrastlib.encoders.pooling import pool


def _padded(lengths, hidden=4, left=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    h = torch.randn(len(lengths), t, hidden, generator=g)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, t - n :] = 1
        else:
            mask[i, :n] = 1
    return h, mask


def test_mean_ignores_padding():
    h, mask = _padded([3, 5, 1])
    out = pool("mean", h, mask)
    for i, n in enumerate([3, 5, 1]):
        torch.testing.assert_close(out[i], h[i, :n].mean(0))


def test_last_token_right_and_left_padding():
    for left in (False, True):
        h, mask = _padded([2, 4, 3], left=left)
        out = pool("last", h, mask)
        t = h.shape[1]
        for i, n in enumerate([2, 4, 3]):
            last = t - 1 if left else n - 1
            torch.testing.assert_close(out[i], h[i, last])


def test_max_ignores_padding_even_if_padding_is_large():
    h, mask = _padded([2, 4])
    h[0, 2:] = 1e6  # padding positions of row 0
    out = pool("max", h, mask)
    torch.testing.assert_close(out[0], h[0, :2].max(0).values)


def test_cls_is_first_token():
    h, mask = _padded([2, 3])
    torch.testing.assert_close(pool("cls", h, mask), h[:, 0])
