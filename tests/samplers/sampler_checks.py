"""Checks every batch sampler must pass, shared by the tests in this folder (importable
because pytest puts the test's folder on sys.path).

``make(num_replicas=..., rank=...)`` builds one sampler (a ``functools.partial`` of the
class with its rows, per-device batch size and options).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from contrastlib.samplers import GlobalBatchSampler

Make = Callable[..., GlobalBatchSampler]

SNLI_DEV = ("nli", "snli-dev.tsv")


def epoch_shards(make: Make, world: int, epoch: int = 0) -> list[list[list[int]]]:
    """Every rank's batches of ``epoch``, checking what DDP needs: ``__len__`` exact and
    equal on every rank, and every step's batch of equal size on every rank."""
    shards = []
    for rank in range(world):
        s = make(num_replicas=world, rank=rank)
        s.set_epoch(epoch)
        batches = list(s)
        assert len(s) == len(batches)
        # steps_per_epoch, or none at all when every global batch is shorter than the world
        # size (colliding texts in a tiny data set): nothing to repeat (samplers/base.py)
        assert len(batches) in (s.steps_per_epoch(world), 0)
        shards.append(batches)
    assert len({len(b) for b in shards}) == 1
    for step in range(len(shards[0])):
        sizes = {len(b[step]) for b in shards}
        assert len(sizes) == 1 and sizes.pop() >= 1
    return shards


def global_steps(shards: list[list[list[int]]]) -> list[list[int]]:
    """The global batch of every step: the ranks' slices joined in rank order."""
    return [[i for rank in shards for i in rank[step]] for step in range(len(shards[0]))]


def assert_ranks_disjoint(shards: list[list[list[int]]]) -> None:
    for step in range(len(shards[0])):
        flat = [i for rank in shards for i in rank[step]]
        assert len(flat) == len(set(flat)), f"step {step}: a row on two ranks"


def assert_matches_one_process(make_at: Callable[[int], Make], batch_size: int, world: int, epoch: int = 0) -> None:
    """Rank slices at ``batch_size`` join into the batches one process forms at
    ``world * batch_size`` (each cut to a multiple of ``world``), step by step, as long
    as no global batch shorter than ``world`` came before (see samplers/base.py)."""
    steps = global_steps(epoch_shards(make_at(batch_size), world, epoch))
    one = make_at(batch_size * world)(num_replicas=1, rank=0)
    one.set_epoch(epoch)
    for step, (joined, full) in enumerate(zip(steps, list(one), strict=False)):
        if len(full) < world:
            break
        assert joined == full[: len(joined)], f"step {step}"
        assert len(full) - len(joined) < world


def assert_epochs_reseeded(make: Make, world: int = 1) -> None:
    """A different order each epoch; the same one again for the same seed and epoch."""
    e0 = global_steps(epoch_shards(make, world, 0))
    e1 = global_steps(epoch_shards(make, world, 1))
    assert e0 != e1
    assert global_steps(epoch_shards(make, world, 0)) == e0
    s = make(num_replicas=world, rank=0)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(0)
    assert list(s) != first  # the same instance follows set_epoch


def text_repeats(rows: Sequence[Sequence[Any]], batch: list[int]) -> list[Any]:
    """Texts of two different rows in ``batch`` that are equal (a row may repeat its own)."""
    counts = Counter(t for i in batch for t in set(rows[i]))
    return [t for t, n in counts.items() if n > 1]


def assert_no_repeated_text(rows: Sequence[Sequence[Any]], steps: list[list[int]]) -> None:
    for step, batch in enumerate(steps):
        assert not text_repeats(rows, batch), f"step {step}"


def assert_every_row_once(sampler: GlobalBatchSampler, steps: list[list[int]], n: int) -> None:
    """Every row exactly once in the epoch, when the sampler says it left none out."""
    flat = [i for b in steps for i in b]
    if sampler.epoch_stats == {"left_out": 0, "repeated": 0} and not sampler.drop_last and len(flat) == n:
        assert sorted(flat) == list(range(n))
    assert len(flat) - len(set(flat)) <= sampler.epoch_stats["repeated"]


def hashed_bag_of_words(texts: Sequence[str], dim: int = 256) -> Any:
    """Cheap, deterministic text embeddings (word counts hashed into ``dim`` buckets,
    L2-normalised): real texts with topical structure, without loading a model."""
    import zlib

    import numpy as np

    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"[a-z]+", text.lower()):
            out[row, zlib.crc32(word.encode()) % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)
