"""mined: each anchor with the rows whose positives are its mined negatives (breadth-first),
no text twice in a global batch except a positive that is also another row's mined
negative; exact equal lengths on every rank; every row once per epoch; reseeded."""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sampler_checks import (
    SNLI_DEV,
    assert_epochs_reseeded,
    assert_every_row_once,
    assert_matches_one_process,
    assert_ranks_disjoint,
    epoch_shards,
    global_steps,
)
from tests_helpers import shared

from contrastlib.registry import SAMPLERS
from contrastlib.samplers import RandomBatchSampler
from contrastlib.samplers.mined import MinedBatchSampler


def rule_breaks(rows, batch: list[int]) -> list[str]:
    """Texts shared by rows of ``batch`` other than as one row's positive that other rows
    have as a mined negative (a row repeating a text of its own is not a repeat)."""
    uses: dict = {}
    for i in batch:
        row = rows[i]
        for k, text in enumerate(row):
            role = "anchor" if k == 0 else "positive" if k == 1 else "negative"
            uses.setdefault(text, {}).setdefault(i, set()).add(role)
    breaks = []
    for text, by_row in uses.items():
        if len(by_row) < 2:
            continue
        anchors = [i for i, r in by_row.items() if "anchor" in r]
        positives = [i for i, r in by_row.items() if "positive" in r]
        if anchors or len(positives) != 1:
            breaks.append(f"{text!r}: {by_row}")
    return breaks


def linked_fraction(rows, batches: list[list[int]]) -> float:
    """Share of (row, mined negative) pairs whose negative is the positive of a row in the
    same batch, among negatives that are some row's positive."""
    by_positive = {r[1]: i for i, r in enumerate(rows)}
    together = total = 0
    for b in batches:
        members = set(b)
        for i in b:
            for neg in rows[i][2:]:
                if neg in by_positive:
                    total += 1
                    together += by_positive[neg] in members
    return together / max(total, 1)


def cycles(n_cycles: int, length: int) -> list[tuple[str, ...]]:
    """Rows in cycles: each row's mined negative is the next row's positive."""
    rows = []
    for c in range(n_cycles):
        for k in range(length):
            nxt = (k + 1) % length
            rows.append((f"q{c}.{k}", f"d{c}.{k}", f"d{c}.{nxt}"))
    return rows


def test_registered():
    assert SAMPLERS.get("mined") is MinedBatchSampler


@pytest.mark.parametrize("world", [1, 2, 3])
def test_linked_rows_share_a_batch(world):
    """Cycles of 4 rows, global batches of 8 or 12: every cycle lies within one global batch."""
    rows = cycles(30, 4)
    make = functools.partial(MinedBatchSampler, rows, 4, seed=3)
    for epoch in (0, 1):
        shards = epoch_shards(make, world, epoch)
        steps = global_steps(shards)
        where = {i: k for k, b in enumerate(steps) for i in b}
        for c in range(30):
            assert len({where[4 * c + k] for k in range(4)}) == 1, c
        for b in steps:
            assert not rule_breaks(rows, b)
        assert_ranks_disjoint(shards)
        assert sorted(where) == list(range(len(rows)))


def test_breadth_first_hardest_first():
    """Row 0's negatives are the positives of rows 1 and 2 (in that order); row 1's of row 3:
    the batch is 0, then 1 and 2 (its own links), then 3."""
    rows = [("q0", "d0", "d1", "d2"), ("q1", "d1", "d3"), ("q2", "d2"), ("q3", "d3"), ("q4", "d4"), ("q5", "d5")]
    found = 0
    for seed in range(40):
        first = next(iter(MinedBatchSampler(rows, 4, seed=seed, num_replicas=1, rank=0)))
        if first[0] == 0:  # the epoch's order starts with row 0
            assert first == [0, 1, 2, 3]
            found += 1
    assert found


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    vocab=st.integers(4, 60),
    negatives=st.integers(0, 3),
    batch=st.integers(1, 6),
    world=st.integers(1, 3),
    drop_last=st.booleans(),
    epoch=st.integers(0, 2),
)
def test_invariants(n, vocab, negatives, batch, world, drop_last, epoch):
    """Random mined rows with colliding texts: the repeat rule, exact equal lengths, disjoint
    ranks, every row once when nothing was left out."""
    rng = random.Random(n * 1000 + vocab)
    rows = [tuple(f"t{rng.randrange(vocab)}" for _ in range(2 + negatives)) for _ in range(n)]
    make = functools.partial(MinedBatchSampler, rows, batch, drop_last=drop_last, seed=1)
    shards = epoch_shards(make, world, epoch)
    steps = global_steps(shards)
    for b in steps:
        assert not rule_breaks(rows, b)
    assert_ranks_disjoint(shards)
    if world == 1:
        one = make(num_replicas=1, rank=0)
        one.set_epoch(epoch)
        assert_every_row_once(one, list(one), n)


def test_matches_one_process_and_is_reseeded():
    rows = cycles(9, 3) + [(f"x{i}", f"y{i}") for i in range(10)]

    def make_at(batch):
        return functools.partial(MinedBatchSampler, rows, batch, seed=2)

    for world in (1, 2, 3):
        assert_matches_one_process(make_at, 4, world)
        assert_epochs_reseeded(make_at(4), world)


def test_explicit_neighbours_override_the_texts():
    rows = [(f"q{i}", f"d{i}") for i in range(24)]  # no links in the texts
    groups = [list(range(s, s + 4)) for s in range(0, 24, 4)]
    neighbours = [[j for j in groups[i // 4] if j != i] for i in range(24)]
    s = MinedBatchSampler(rows, 8, neighbours=neighbours, seed=0, num_replicas=1, rank=0)
    for b in s:
        assert len(b) == 8 and {i // 4 for i in b} == {b[0] // 4, b[4] // 4}
    with pytest.raises(ValueError, match="^neighbours: 2 lists for 24 rows"):
        MinedBatchSampler(rows, 8, neighbours=[[1], [0]])
    with pytest.raises(ValueError, match="^neighbours: row index 24 out of range"):
        MinedBatchSampler(rows, 8, neighbours=[[24]] * 24)


def test_large_batches_are_built_quickly():
    """A complexity guard: 100k mined rows in batches of 8,192 and of 64."""
    import time

    n = 100_000
    rows = [(f"q{i}", f"p{i}", f"p{(i * 7 + 1) % n}", f"p{(i * 13 + 5) % n}") for i in range(n)]
    for batch in (8192, 64):
        s = MinedBatchSampler(rows, batch, seed=0, num_replicas=1, rank=0)
        start = time.perf_counter()
        assert len(s) == s.steps_per_epoch(1)
        assert time.perf_counter() - start < 30


@pytest.mark.shared_data
def test_snli_dev_slice():
    """Real NLI texts as mined rows: each row's two negatives are the positives of two
    other rows (seeded). The mined sampler puts most of those rows in the same batch;
    plain shuffling almost none."""
    from contrastlib.data.readers import read_tuples

    base, _ = read_tuples(shared(*SNLI_DEV))
    base = base[:600]
    rng = random.Random(0)
    rows = []
    for i, (anchor, positive, _) in enumerate(base):
        others = rng.sample([j for j in range(len(base)) if j != i], 2)
        rows.append((anchor, positive, *(base[j][1] for j in others)))
    for world in (1, 2, 3):
        make = functools.partial(MinedBatchSampler, rows, 16, seed=0)
        shards = epoch_shards(make, world)
        steps = global_steps(shards)
        for b in steps:
            assert not rule_breaks(rows, b)
        assert_ranks_disjoint(shards)
    s = MinedBatchSampler(rows, 16, seed=0, num_replicas=1, rank=0)
    steps = list(s)
    assert_every_row_once(s, steps, len(rows))
    random_batches = list(RandomBatchSampler(rows, 16, seed=0, num_replicas=1, rank=0))
    assert linked_fraction(rows, steps) > 0.25  # a BFS tree of 16 holds 15 of its 32 links at best
    assert linked_fraction(rows, random_batches) < 0.1
