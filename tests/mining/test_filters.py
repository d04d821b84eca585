"""The miner's filters on hand-made embeddings: every count, every exclusion."""

from __future__ import annotations

import numpy as np
import pytest

from contrastlib.index import VectorIndex
from contrastlib.mining.miner import MineOptions, excluded_sets, mine_shard


def unit(*rows: list[float]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mine(anchor_emb, corpus_emb, pairs, anchors, corpus_texts, corpus_ids=None, **opts):
    options = MineOptions(**opts)
    index = VectorIndex(corpus_emb.shape[1])
    index.add(corpus_emb)
    positives: list[list[int]] = [[] for _ in anchors]
    for a, p in pairs:
        positives[a].append(p)
    excluded = excluded_sets(anchors, positives, corpus_ids or corpus_texts, corpus_texts)
    return mine_shard(
        list(range(len(anchors))), list(enumerate(pairs)), anchor_emb, corpus_emb, index.search, excluded, options,
        range_max=options.window(max(len(p) for p in positives)), max_positives=max(len(p) for p in positives),
    )


def random_case(seed: int, n_anchors: int = 12, n_corpus: int = 60, dim: int = 16):
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(n_corpus, dim)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    pairs = [(a, int(p)) for a in range(n_anchors) for p in rng.choice(n_corpus, rng.integers(1, 4), replace=False)]
    anchor = np.stack([corpus[[p for b, p in pairs if b == a]].mean(0) for a in range(n_anchors)])
    anchor = anchor + 0.3 * rng.normal(size=anchor.shape)
    anchor = (anchor / np.linalg.norm(anchor, axis=1, keepdims=True)).astype(np.float32)
    texts = [f"doc {i}" for i in range(n_corpus)]
    return anchor, corpus, pairs, [f"anchor {a}" for a in range(n_anchors)], texts


@pytest.mark.parametrize("seed", range(5))
def test_no_known_positive_is_ever_a_negative(seed):
    anchor, corpus, pairs, anchors, texts = random_case(seed)
    # two documents share a positive's text under another id, and one is the anchor's text
    texts[59] = texts[pairs[0][1]]
    texts[58] = anchors[1]
    results, stats = mine(anchor, corpus, pairs, anchors, texts, corpus_ids=[f"id{i}" for i in range(60)],
                          range_max=60, num_negatives=10, near_duplicate=None)
    positives = {a: {p for b, p in pairs if b == a} for a in range(len(anchors))}
    for r in results:
        for j in r.negatives:
            assert j not in positives[r.anchor]
            assert texts[j] not in {texts[p] for p in positives[r.anchor]}
            assert texts[j] != anchors[r.anchor]
    assert 59 not in {j for r in results if r.anchor == 0 for j in r.negatives}
    assert 58 not in {j for r in results if r.anchor == 1 for j in r.negatives}
    # the whole corpus was searched: every excluded document was met and counted once
    expected = excluded_sets(anchors, [[p for b, p in pairs if b == a] for a in range(len(anchors))], texts, texts)
    assert stats.dropped["known_positive"] == sum(len(e) for e in expected)


def pool(anchor, corpus, pairs, a, range_max):
    """sentence-transformers' window for anchor ``a``: its best ``range_max + P`` candidates
    (``P``: the most positives an anchor has), its own positives set aside, best first."""
    n_pos = max(sum(1 for b, _ in pairs if b == c) for c in {b for b, _ in pairs})
    pos = {p for b, p in pairs if b == a}
    sims = anchor @ corpus.T
    return [int(j) for j in np.argsort(-sims[a])[: range_max + n_pos] if j not in pos], sims


def test_shortfall_counted_exactly_when_the_window_is_smaller_than_num_negatives():
    anchor, corpus, pairs, anchors, texts = random_case(0)
    for range_min in (0, 1):
        results, stats = mine(anchor, corpus, pairs, anchors, texts, range_min=range_min, range_max=2,
                              num_negatives=5, near_duplicate=None)
        want = {a: pool(anchor, corpus, pairs, a, 2)[0][range_min:] for a in range(len(anchors))}
        assert all(r.negatives == want[r.anchor] for r in results)
        short = [a for a, _ in pairs if len(want[a]) < 5]
        assert len(short) > len(pairs) // 2  # most pairs are short: the count is tested
        assert stats.short_pairs == len(short)
        assert stats.missing_negatives == sum(5 - len(want[a]) for a, _ in pairs)
        assert stats.kept == sum(len(want[a]) for a, _ in pairs)
        assert stats.dropped["below_range_min"] == range_min * len(anchors)


def test_margins_and_bounds_against_a_loop_reference():
    anchor, corpus, pairs, anchors, texts = random_case(3)
    opts = dict(range_max=30, num_negatives=4, relative_margin=0.1, max_score=0.9, min_score=-0.2, near_duplicate=None)
    results, stats = mine(anchor, corpus, pairs, anchors, texts, **opts)
    sims = anchor @ corpus.T
    for a in range(len(anchors)):
        pos = [p for b, p in pairs if b == a]
        lowest = min(sims[a, p] for p in pos)
        ranked = pool(anchor, corpus, pairs, a, 30)[0]
        keep = [j for j in ranked if -0.2 <= sims[a, j] <= 0.9 and sims[a, j] <= lowest - abs(lowest) * 0.1][:4]
        for r in results:
            if r.anchor == a:
                assert r.negatives == keep, a
                np.testing.assert_allclose(r.scores, sims[a, keep], atol=1e-5)
    assert sum(stats.dropped.values()) + stats.not_sampled + sum(len(set(r.negatives)) for r in {r.anchor: r for r in results}.values()) == stats.candidates


def test_random_sampling_is_seeded_and_differs_by_seed():
    anchor, corpus, pairs, anchors, texts = random_case(1)
    a1, _ = mine(anchor, corpus, pairs, anchors, texts, range_max=30, num_negatives=3, sampling_strategy="random", seed=7)
    a2, _ = mine(anchor, corpus, pairs, anchors, texts, range_max=30, num_negatives=3, sampling_strategy="random", seed=7)
    b, _ = mine(anchor, corpus, pairs, anchors, texts, range_max=30, num_negatives=3, sampling_strategy="random", seed=8)
    assert [r.negatives for r in a1] == [r.negatives for r in a2]
    assert [r.negatives for r in a1] != [r.negatives for r in b]


def test_near_duplicates_of_the_positive_are_dropped():
    corpus = unit([1, 0, 0], [0.999, 0.04, 0], [0.6, 0.8, 0], [0, 1, 0], [0, 0, 1])
    anchor = unit([0.9, 0.3, 0.1])
    results, stats = mine(anchor, corpus, [(0, 0)], ["q"], ["p", "copy of p", "x", "y", "z"], range_max=4,
                          num_negatives=4, near_duplicate=0.98)
    assert 1 not in results[0].negatives
    assert stats.dropped["near_duplicate"] == 1


def test_repeated_anchor_gets_the_same_negatives_for_every_positive():
    anchor, corpus, pairs, anchors, texts = random_case(2)
    results, _ = mine(anchor, corpus, pairs, anchors, texts, range_max=20, num_negatives=3, near_duplicate=None)
    by_anchor: dict[int, list[list[int]]] = {}
    for r in results:
        by_anchor.setdefault(r.anchor, []).append(r.negatives)
    assert any(len(v) > 1 for v in by_anchor.values())
    for v in by_anchor.values():
        assert all(x == v[0] for x in v)


def test_bad_options_fail_at_once():
    with pytest.raises(ValueError, match="range_max"):
        MineOptions(range_min=5, range_max=5)
    with pytest.raises(ValueError, match="sampling_strategy"):
        MineOptions(sampling_strategy="best")
    with pytest.raises(ValueError, match="relative_margin"):
        MineOptions(relative_margin=1.5)


def test_bad_seed_and_near_duplicate_fail_at_once():
    with pytest.raises(ValueError, match="seed"):
        MineOptions(seed=-1)
    with pytest.raises(ValueError, match="near_duplicate"):
        MineOptions(near_duplicate=0.0)


def test_beir_queries_with_the_same_text_are_one_anchor(tmp_path):
    """q1 and q2 share a text; d2 is relevant to q2 only: it must never be q1's negative."""
    import json

    from contrastlib.mining import read_mining_input

    root = tmp_path / "b"
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": f"document {i}"} for i in range(5)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": "q1", "text": "same"}, {"_id": "q2", "text": "same"}, {"_id": "q3", "text": "other"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\td1\t1\nq3\td3\t1\n")
    data = read_mining_input(str(root), split="train")
    assert data.anchors == ["same", "other"]
    assert sorted(data.positives_by_anchor()[0]) == [1, 2]
    assert data.duplicate_pairs == 1  # (same, d1) twice
