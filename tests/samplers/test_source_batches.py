"""Several sources' batches (``samplers/sources.py``): every global batch from one source,
``proportional`` (every batch of every source once, in a seeded order) and ``round_robin``
(one of each in turn, until the smallest is used up) checked exactly, the DDP split and a
mid-epoch resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sampler_checks import epoch_shards

from contrastlib.samplers.no_duplicates import NoDuplicatesBatchSampler
from contrastlib.samplers.random import RandomBatchSampler
from contrastlib.samplers.sources import SourcesSampler

SIZES = (37, 100, 12)  # rows per source: 3 batches (one partial), 7 (one partial), 1 partial at 16


def _texts(n: int, tag: str) -> list[tuple[str, str]]:
    return [(f"{tag} anchor {i}", f"{tag} positive {i}") for i in range(n)]


def _make(composition: str, batch: int = 8, *, sampler: type = NoDuplicatesBatchSampler, sizes=SIZES, seed: int = 3):
    def make(num_replicas: int | None = None, rank: int | None = None) -> SourcesSampler:
        parts = [sampler(_texts(n, f"s{i}"), batch, seed=seed + i, num_replicas=num_replicas, rank=rank)
                 for i, n in enumerate(sizes)]
        return SourcesSampler(parts, composition, batch_size=batch, seed=seed, num_replicas=num_replicas, rank=rank)
    return make


def _source(row: int, sizes=SIZES) -> int:
    return int(np.searchsorted(np.cumsum(sizes), row, side="right"))


@pytest.mark.parametrize("world", [1, 2])
def test_proportional_gives_every_batch_of_every_source_once_each_from_one_source(world):
    make = _make("proportional")
    shards = epoch_shards(make, world)
    steps = [[i for rank in shards for i in rank[k]] for k in range(len(shards[0]))]
    sources = [{_source(i) for i in step} for step in steps]
    assert all(len(s) == 1 for s in sources)  # no global batch mixes sources
    # exactly each source's own batches, as its sampler alone forms them, in the order drawn
    parts = [NoDuplicatesBatchSampler(_texts(n, f"s{i}"), 8, seed=3 + i) for i, n in enumerate(SIZES)]
    starts = np.concatenate([[0], np.cumsum(SIZES)[:-1]])
    own = [[[starts[i] + r for r in b] for b in p._shared_batches(world)] for i, p in enumerate(parts)]
    counts = Counter(s.pop() for s in sources)
    assert counts == {i: len(own[i]) for i in range(3)}  # in proportion to the sources' sizes
    for i in range(3):
        assert [sorted(s) for s, src in zip(steps, [_source(st[0]) for st in steps], strict=True) if src == i] == \
            [sorted(b) for b in own[i]]
    # every row of every source once (cut to a multiple of the world size at each source's end)
    rows = Counter(i for step in steps for i in step)
    assert set(rows.values()) == {1}
    assert len(rows) == sum(n - (n % (8 * world)) % world for n in SIZES)


def test_proportional_order_is_seeded_and_changes_with_the_epoch():
    make = _make("proportional", sampler=RandomBatchSampler)
    one = make()
    order0 = [_source(b[0]) for b in one]
    again = [_source(b[0]) for b in make()]
    one.set_epoch(1)
    order1 = [_source(b[0]) for b in one]
    assert order0 == again and order0 != order1 and sorted(order0) == sorted(order1)
    assert order0 == list(one.order(0, 1))


def test_round_robin_alternates_until_the_smallest_source_is_used_up():
    make = _make("round_robin", sizes=(37, 100, 20))  # 5, 13 and 3 batches of 8
    s = make()
    sources = [_source(b[0], (37, 100, 20)) for b in s]
    assert sources == [0, 1, 2] * 3 and len(s) == 9
    for b in s:
        assert len({_source(i, (37, 100, 20)) for i in b}) == 1
    two = epoch_shards(_make("round_robin", sizes=(37, 100, 20)), 2)
    assert [_source(r[0], (37, 100, 20)) for r in two[0]] == [0, 1, 2] * 2  # batches of 16: 3, 7, 2


def test_a_resumed_epoch_continues_the_same_order():
    make = _make("proportional")
    whole = list(make())
    cut = make()
    cut.resume_at(0, 4)
    assert list(cut) == whole[4:]


def test_an_unknown_composition_is_refused():
    with pytest.raises(ValueError, match="composition: one of proportional, round_robin"):
        _make("mixed")()
