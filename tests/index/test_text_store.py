"""Texts on disk (utils/text_store.py) and the embedding cache read a shard or a row at a
time: every value back as written, the fingerprint and length order of the list, the
cache's key unchanged whether the texts are a list or a store."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_cache import CountingEncoder

from contrastlib.index.cache import EmbeddingCache, length_order
from contrastlib.utils import text_store
from contrastlib.utils.text_store import (
    TextStore,
    build_store,
    cached_store,
    digest,
    texts_fingerprint,
)

TEXTS = ["plain", "", "naïve café ☕", "\U0001F600 emoji", "lone \ud800 surrogate", "tab\tand\nnewline",
         "x" * 5000] + [f"row {i}" for i in range(300)]


def fill_with(texts, ids=None):
    def fill(w):
        for k, t in enumerate(texts):
            w.add(t, None if ids is None else ids[k])
    return fill


def test_every_value_comes_back_as_written(tmp_path, monkeypatch):
    monkeypatch.setattr(text_store, "_BLOCK", 64)  # iteration crosses many blocks (and one longer value)
    ids = [f"id-{i}" for i in range(len(TEXTS))]
    store = build_store(tmp_path / "s", fill_with(TEXTS, ids), with_ids=True)
    assert len(store) == len(TEXTS)
    assert [store[i] for i in range(len(TEXTS))] == TEXTS
    assert list(store) == TEXTS and store[-1] == TEXTS[-1] and store[2:5] == TEXTS[2:5]
    assert store.ids is not None and list(store.ids) == ids
    assert store.fingerprint == texts_fingerprint(TEXTS) == texts_fingerprint(store)
    np.testing.assert_array_equal(store.char_lengths(), [len(t) for t in TEXTS])
    np.testing.assert_array_equal(length_order(store), length_order(TEXTS))
    assert store.digests().tobytes() == b"".join(digest(t) for t in TEXTS)
    again = pickle.loads(pickle.dumps(store))  # (sent to a pool's process by its folder)
    assert isinstance(again, TextStore) and again[3] == TEXTS[3]
    with pytest.raises(IndexError):
        store[len(TEXTS)]


def test_a_failed_build_leaves_nothing_and_a_built_store_is_reused(tmp_path):
    def broken(w):
        w.add("one")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError):
        cached_store("k", broken, root=tmp_path)
    assert not (tmp_path / "k").exists()
    cached_store("k", fill_with(["a", "b"]), root=tmp_path)
    again = cached_store("k", broken, root=tmp_path)  # there: not built again
    assert list(again) == ["a", "b"]


def test_the_cache_reads_a_store_as_it_reads_the_list(tmp_path):
    """Same key, same shards, same rows: a store is only where the texts are read from."""
    texts = [t for t in TEXTS if "\ud800" not in t]  # (the counting encoder takes UTF-8 only)
    store = build_store(tmp_path / "s", fill_with(texts))
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path / "cache", shard_size=64)
    assert cache.key(enc, store) == cache.key(enc, texts)
    from_list = cache.embed(enc, texts, show_progress_bar=False)
    from_store = cache.embed(enc, store, show_progress_bar=False)
    assert cache.last_stats["encoded"] == 0
    np.testing.assert_array_equal(from_list, from_store)
    entry = cache.ensure(enc, store, show_progress_bar=False)
    rows = np.asarray([5, 0, len(texts) - 1, 77, 5])
    np.testing.assert_array_equal(entry.take(rows), from_list[rows])
    seen = np.zeros(len(texts), dtype=int)
    for r, emb in entry.shards():
        np.testing.assert_array_equal(emb, from_list[r])
        seen[r] += 1
    assert (seen == 1).all() and len(entry.checksums) == entry.n_shards


def test_a_column_sent_elsewhere_opens_its_own_file(tmp_path):
    """A pickled (or copied) column is rebuilt from its folder: it never carries, nor
    closes, the sender's file descriptor."""
    import copy
    import gc

    store = build_store(tmp_path / "s", fill_with(["a", "b"], ["x", "y"]), with_ids=True)
    assert store.ids is not None and store.ids[1] == "y"  # (opens the sender's descriptor)
    for other in (pickle.loads(pickle.dumps(store.ids)), copy.deepcopy(store.ids)):
        assert list(other) == ["x", "y"]
        del other
        gc.collect()
    assert store.ids[0] == "x" and store[1] == "b"  # the sender's descriptor still works
