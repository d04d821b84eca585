"""NoDuplicatesBatchSampler: no repeated text, exact len, reseeded per epoch, DDP split."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrastlib.samplers import NoDuplicatesBatchSampler


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=80),
    batch_size=st.integers(1, 9),
    drop_last=st.booleans(),
    epoch=st.integers(0, 3),
)
def test_no_duplicates_and_exact_len(rows, batch_size, drop_last, epoch):
    s = NoDuplicatesBatchSampler(rows, batch_size, drop_last=drop_last, seed=1, num_replicas=1, rank=0)
    s.set_epoch(epoch)
    batches = list(s)
    # the same number of steps in every epoch (Lightning reads the length once)
    assert len(s) == len(batches) == s.steps_per_epoch(1)
    expected = len(rows) // batch_size + int(not drop_last and len(rows) % batch_size > 0)
    assert len(batches) == expected
    seen_rows = []
    for b in batches:
        assert 1 <= len(b) <= batch_size
        texts = [t for i in b for t in rows[i]]
        # texts within a row may repeat each other (a == b), but never across rows
        per_row = [set(rows[i]) for i in b]
        assert sum(len(x) for x in per_row) == len(set().union(*per_row)), texts
        seen_rows.extend(b)
    stats = s.epoch_stats
    assert len(seen_rows) - len(set(seen_rows)) <= stats["repeated"]
    if not drop_last and stats == {"left_out": 0, "repeated": 0}:
        assert sorted(seen_rows) == list(range(len(rows)))


def test_order_changes_with_epoch_and_is_reproducible():
    rows = [(f"a{i}", f"b{i}") for i in range(100)]
    s = NoDuplicatesBatchSampler(rows, 10, seed=3, num_replicas=1, rank=0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    s.set_epoch(0)
    assert list(s) == e0


def test_ddp_ranks_get_disjoint_equal_shares():
    rows = [(f"a{i % 37}", f"b{i}") for i in range(205)]
    shares = [list(NoDuplicatesBatchSampler(rows, 8, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    flat = [i for s in shares for b in s for i in b]
    assert len(flat) == len(set(flat))
    for r in range(3):
        assert len(NoDuplicatesBatchSampler(rows, 8, seed=0, num_replicas=3, rank=r)) == len(shares[r])


def test_large_batches_are_built_quickly():
    rows = [(f"q{i}", f"p{i % 50_000}") for i in range(100_000)]
    s = NoDuplicatesBatchSampler(rows, 8192, seed=0, num_replicas=1, rank=0)
    start = time.perf_counter()
    n = len(s)
    elapsed = time.perf_counter() - start
    assert n >= 100_000 // 8192
    # not a timing assertion on the machine, a complexity guard: quadratic would take minutes
    assert elapsed < 60


# ----------------------------------------------------------------------------- DDP sharding
from contrastlib.samplers import RandomBatchSampler  # noqa: E402

SAMPLERS = [NoDuplicatesBatchSampler, RandomBatchSampler]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 70), batch_size=st.integers(1, 6), world=st.integers(1, 4), drop_last=st.booleans(),
    epoch=st.integers(0, 2), which=st.sampled_from([0, 1]),
)
def test_every_rank_gets_an_equal_slice_of_the_one_process_global_batch(n, batch_size, world, drop_last, epoch, which):
    """Rank slices concatenate to the batch a 1-process run at world x batch yields (cut to
    a multiple of the world size); every rank has the same length and the same shapes."""
    cls = SAMPLERS[which]
    rows = [(f"a{i % 23}", f"b{i}") for i in range(n)]
    shards = []
    for r in range(world):
        s = cls(rows, batch_size, drop_last=drop_last, seed=5, num_replicas=world, rank=r)
        s.set_epoch(epoch)
        shards.append(list(s))
        assert len(s) == len(shards[-1]) == s.steps_per_epoch(world)
    one = cls(rows, batch_size * world, drop_last=drop_last, seed=5, num_replicas=1, rank=0)
    one.set_epoch(epoch)
    one_batches = list(one)
    assert len({len(s) for s in shards}) == 1
    for step in range(len(shards[0])):
        sizes = {len(s[step]) for s in shards}
        assert len(sizes) == 1 and sizes.pop() >= 1
    # A global batch of fewer than `world` rows has no DDP counterpart: the last one, or
    # (no-duplicates sampler only) a mid-epoch one that colliding texts left partial.
    # Steps line up with the 1-process run while no such batch came before.
    aligned = len(shards[0])
    for k, b in enumerate(one_batches):
        if len(b) < world and k < aligned:
            aligned = k
            break
    assert len(one_batches) - len(shards[0]) in (0, 1) or aligned < len(one_batches) - 1
    for step in range(aligned):
        sizes = {len(s[step]) for s in shards}
        assert len(sizes) == 1 and sizes.pop() >= 1
        joined = [i for s in shards for i in s[step]]
        if step < len(one_batches):
            assert joined == one_batches[step][: len(joined)]
            assert len(one_batches[step]) - len(joined) < world


def test_lightning_reaches_set_epoch():
    """Lightning calls set_epoch on ``dataloader.batch_sampler.sampler`` only: without it
    every epoch would repeat the first one's order."""
    from lightning_fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    rows = [(f"a{i}", f"b{i}") for i in range(40)]
    for cls in SAMPLERS:
        sampler = cls(rows, 4, seed=0, num_replicas=1, rank=0)
        loader = DataLoader(list(range(40)), batch_sampler=sampler)
        first = list(loader)
        _set_sampler_epoch(loader, 1)
        assert sampler.epoch == 1
        assert [b.tolist() for b in loader] != [b.tolist() for b in first]


def _reference_no_duplicates(keys, order, size):
    """The batches written out plainly: take rows in order, put off a row whose text is
    already in the batch, and try the rows put off first for the next batch."""
    batches, pending = [], list(order)
    while pending:
        batch, seen, deferred, pos = [], set(), [], 0
        while pos < len(pending) and len(batch) < size:
            i = pending[pos]
            pos += 1
            if any(t in seen for t in keys[i]):
                deferred.append(i)
                continue
            batch.append(i)
            seen.update(keys[i])
        pending = deferred + pending[pos:]
        batches.append(batch)
    return batches


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 40)), min_size=1, max_size=120),
    batch_size=st.integers(1, 9),
    epoch=st.integers(0, 3),
)
def test_no_duplicates_forms_the_batches_of_the_plain_algorithm(rows, batch_size, epoch):
    from contrastlib.samplers.base import permutation

    s = NoDuplicatesBatchSampler(rows, batch_size, seed=5, num_replicas=1, rank=0)
    order = permutation(len(rows), 5 + epoch).tolist()
    assert list(s.global_batches(epoch, batch_size)) == _reference_no_duplicates(rows, order, batch_size)


class _CountingRows(Sequence):
    """A million rows made on access, counting the accesses (a memory-mapped table's view)."""

    def __init__(self, n):
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        return (f"anchor {i % 1000}", f"positive {i}")


@pytest.mark.parametrize("sampler", ["no_duplicates", "random"])
def test_a_million_rows_are_read_only_as_batches_need_them(sampler):
    from contrastlib.registry import SAMPLERS

    rows = _CountingRows(1_000_000)
    s = SAMPLERS.get(sampler)(rows, 32, seed=0, num_replicas=2, rank=1)
    assert len(s) == 1_000_000 // 64  # exact, from the formula and the first batch
    batches = iter(s)
    first = [next(batches) for _ in range(3)]
    assert all(len(b) == 32 for b in first)
    # three global batches of 64 look at a few hundred rows (the anchors repeat every
    # 1,000 rows, so a few are put off), not at a million
    assert rows.reads <= 3 * 64 * 3 + 64, rows.reads
    if sampler == "no_duplicates":
        flat = [i for b in first for i in b]
        assert len(set(flat)) == len(flat)


def test_rows_changed_mid_epoch_do_not_change_that_epoch_s_batches():
    """Re-mining rewrites rows in memory between steps: the no-duplicates sampler forms the
    rest of the epoch from the rows as the epoch began (found in review)."""
    rows = [(f"a{i}", f"b{i}") for i in range(40)]
    want = list(NoDuplicatesBatchSampler(list(rows), 8, seed=2, num_replicas=1, rank=0))
    live = list(rows)
    s = NoDuplicatesBatchSampler(live, 8, seed=2, num_replicas=1, rank=0)
    batches = iter(s)
    got = [next(batches)]
    live[:] = [("same", "same")] * 40  # every row now collides with every other
    got += list(batches)
    assert got == want
