"""m_per_class: G/m classes x m rows per global batch (pytorch-metric-learning's
MPerClassSampler layout), every row at least once per epoch, exact equal lengths on every
rank, reseeded per epoch."""

from __future__ import annotations

import functools
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sampler_checks import (
    SNLI_DEV,
    assert_epochs_reseeded,
    assert_matches_one_process,
    assert_ranks_disjoint,
    epoch_shards,
    global_steps,
)
from tests_helpers import shared

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.m_per_class import MPerClassBatchSampler


def layout_errors(batch: list[int], labels: list, m: int, class_rows: dict) -> list[str]:
    """What breaks pytorch-metric-learning's layout in one batch: every class exactly
    ``m`` times; a class with at least ``m`` rows without a row twice; a class with fewer
    rows with all of them (sampled with replacement)."""
    errors = []
    by_class: dict = {}
    for i in batch:
        by_class.setdefault(labels[i], []).append(i)
    for c, members in by_class.items():
        if len(members) != m:
            errors.append(f"class {c!r}: {len(members)} rows, not {m}")
        elif len(class_rows[c]) >= m and len(set(members)) != m:
            errors.append(f"class {c!r}: a row twice though it has {len(class_rows[c])} rows")
        elif len(class_rows[c]) < m and set(members) != set(class_rows[c]):
            errors.append(f"class {c!r}: not all of its {len(class_rows[c])} rows")
    return errors


def class_rows(labels: list) -> dict:
    out: dict = {}
    for i, c in enumerate(labels):
        out.setdefault(c, []).append(i)
    return out


def test_registered():
    assert SAMPLERS.get("m_per_class") is MPerClassBatchSampler


def test_same_layout_as_pytorch_metric_learning():
    """The property checker accepts every batch of pml's sampler and of ours, on classes of
    1, 2, 3 and 7 rows (m = 2): the same layout, including replacement for a class of one."""
    import numpy as np
    from pytorch_metric_learning.samplers import MPerClassSampler
    from pytorch_metric_learning.utils import common_functions as c_f

    sizes = [1, 2, 3, 7] * 6
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    rows = [(f"a{i}", f"p{i}") for i in range(len(labels))]
    m, batch = 2, 8
    groups = class_rows(labels)

    c_f.NUMPY_RANDOM = np.random.RandomState(0)
    pml = list(MPerClassSampler(labels, m, batch_size=batch, length_before_new_iter=batch * 30))
    pml_batches = [pml[s : s + batch] for s in range(0, len(pml), batch)]
    ours = list(MPerClassBatchSampler(rows, batch, labels=labels, m=m, seed=0, num_replicas=1, rank=0))
    for b in pml_batches:
        assert len(b) == batch and not layout_errors(b, labels, m, groups)
    full = [b for b in ours if len(b) == batch]
    assert len(full) >= len(ours) - 1
    for b in full:
        assert not layout_errors(b, labels, m, groups)
    # what differs by design: an epoch covers every row (pml draws classes uniformly)
    assert set().union(*map(set, ours)) == set(range(len(labels)))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=4, max_size=30),
    m=st.integers(1, 3),
    per_m=st.integers(1, 3),
    world=st.integers(1, 3),
    drop_last=st.booleans(),
    epoch=st.integers(0, 2),
)
def test_layout_lengths_and_coverage(sizes, m, per_m, world, drop_last, epoch):
    labels = [f"c{c}" for c, n in enumerate(sizes) for _ in range(n)]
    batch = m * per_m
    if len(sizes) * m < batch * world:
        return  # too few classes to fill a global batch: tested below
    rows = [(f"a{i}", f"p{i}") for i in range(len(labels))]
    make = functools.partial(MPerClassBatchSampler, rows, batch, labels=labels, m=m, drop_last=drop_last, seed=4)
    shards = epoch_shards(make, world, epoch)
    steps = global_steps(shards)
    groups = class_rows(labels)
    one = make(num_replicas=world, rank=0)
    one.set_epoch(epoch)
    len(one)
    size = batch * world
    rows_per_epoch = m * sum(math.ceil(n / m) for n in sizes)
    assert one.rows_per_epoch == rows_per_epoch
    for k, b in enumerate(steps):
        if len(b) == size:
            assert not layout_errors(b, labels, m, groups), k
        else:  # a short global batch: the last, or one that ran out of classes; cut to a multiple of W
            assert all(n <= m for n in Counter(labels[i] for i in b).values())
        if all(n >= m for n in sizes):
            assert len(set(b)) == len(b)
    if all(n >= m for n in sizes):
        assert_ranks_disjoint(shards)
    # every row at least once, unless the sampler counted rows left out
    stats = one.epoch_stats
    seen = {i for b in steps for i in b}
    if stats["left_out"] == 0 and not drop_last and world == 1:
        assert seen == set(range(len(labels)))
        assert sum(len(b) for b in steps) == rows_per_epoch


def test_left_out_rows_are_counted_exactly():
    """One class with more groups than the epoch has batches: its surplus groups cannot
    share a batch, so they are left out, and counted (one process: nothing is cut)."""
    labels = ["big"] * 40 + [f"s{i}" for i in range(20) for _ in range(2)]
    rows = [(f"a{i}",) for i in range(len(labels))]
    s = MPerClassBatchSampler(rows, 8, labels=labels, m=2, seed=0, num_replicas=1, rank=0)
    batches = list(s)
    assert s.epoch_stats["left_out"] > 0
    assert sum(len(b) for b in batches) + s.epoch_stats["left_out"] - s.epoch_stats["repeated"] == s.rows_per_epoch
    for b in batches:
        assert Counter(labels[i] for i in b)["big"] <= 2


def test_every_rank_slice_holds_whole_classes():
    labels = [c for c in range(30) for _ in range(4)]
    rows = [(f"a{i}",) for i in range(len(labels))]
    shards = epoch_shards(functools.partial(MPerClassBatchSampler, rows, 6, labels=labels, m=3, seed=1), 3)
    for rank in shards:
        for b in rank:
            assert all(n == 3 for n in Counter(labels[i] for i in b).values())


def test_matches_one_process_and_is_reseeded():
    labels = [c for c in range(25) for _ in range(1 + c % 5)]
    rows = [(f"a{i}", f"b{i}") for i in range(len(labels))]

    def make_at(batch):
        return functools.partial(MPerClassBatchSampler, rows, batch, labels=labels, m=2, seed=7)

    for world in (1, 2, 3):
        assert_matches_one_process(make_at, 4, world)
        assert_epochs_reseeded(make_at(4), world)


def test_default_labels_are_the_anchors():
    rows = [("q1", "a"), ("q1", "b"), ("q2", "c"), ("q2", "d"), ("q3", "e"), ("q3", "f")]
    s = MPerClassBatchSampler(rows, 4, m=2, seed=0, num_replicas=1, rank=0)
    for b in s:
        assert sorted(Counter(rows[i][0] for i in b).values()) == [2] * (len(b) // 2)


def test_bad_options():
    rows = [(f"a{i}",) for i in range(20)]
    with pytest.raises(ValueError, match="^m: must divide"):
        MPerClassBatchSampler(rows, 8, m=3)
    with pytest.raises(ValueError, match="^m: must be an integer"):
        MPerClassBatchSampler(rows, 8, m=0)
    with pytest.raises(ValueError, match="^labels:"):
        MPerClassBatchSampler(rows, 8, labels=[1, 2])
    with pytest.raises(ValueError, match="2 classes x m=2 rows cannot fill a batch of 8"):
        MPerClassBatchSampler(rows, 8, labels=[i % 2 for i in range(20)])
    s = MPerClassBatchSampler(rows, 4, labels=[i % 3 for i in range(20)], m=2, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="cannot fill a global batch of 8"):
        len(s)


@pytest.mark.shared_data
def test_snli_dev_slice():
    """Real NLI rows: with the default labels every anchor is its own class (SNLI dev has
    no repeated anchor), so each batch holds G/2 anchors twice each; with labels that group
    rows unevenly (the anchor's first word), the layout holds in every full batch."""
    from contrastlib.data.readers import read_tuples

    rows, _ = read_tuples(shared(*SNLI_DEV))
    rows = rows[:600]
    shards = epoch_shards(functools.partial(MPerClassBatchSampler, rows, 8, m=2, seed=3), 2)
    steps = global_steps(shards)
    for b in steps:
        assert sorted(Counter(rows[i][0] for i in b).values()) == [2] * (len(b) // 2)
    assert {i for b in steps for i in b} == set(range(600))

    labels = [r[0].split()[0].lower() for r in rows]
    groups = class_rows(labels)
    for world in (1, 2, 3):
        make = functools.partial(MPerClassBatchSampler, rows, 8, labels=labels, m=2, seed=3)
        for b in global_steps(epoch_shards(make, world)):
            if len(b) == 8 * world:
                assert not layout_errors(b, labels, 2, groups)
