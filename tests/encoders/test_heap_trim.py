"""The heap trim between encode batches (contrastlib.utils.memory): it really returns freed
pages, it can be turned off, it is throttled, and TextEncoder.encode calls it on CPU."""

from __future__ import annotations

import numpy as np
import pytest

import contrastlib.encoders.text as text_module
from contrastlib.utils.memory import HeapTrimmer, heap_trim_available, trim_heap

glibc = pytest.mark.skipif(not heap_trim_available(), reason="needs glibc's malloc_trim")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


@glibc
def test_trim_returns_freed_heap_pages_to_the_system():
    # 2,000 blocks of 64 KB sit in glibc's heap (below its mmap threshold); a block
    # allocated after them keeps them from being the heap's top, which glibc trims by
    # itself. Freed, they stay resident until malloc_trim hands the pages back.
    blocks = [np.ones(8192) for _ in range(2000)]  # 8192 float64 = 64 KB each, touched
    sentinel = np.ones(8192)
    del blocks
    before = _rss_mb()
    assert trim_heap() is True
    after = _rss_mb()
    assert before - after > 64, f"RSS {before:.0f} -> {after:.0f} MB: the freed 125 MB were not returned"
    del sentinel


def test_trimmer_is_throttled_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("CONTRASTLIB_HEAP_TRIM", "0")
    off = HeapTrimmer(interval_s=0.0)
    assert off.enabled is False and off.step() is False and off.calls == 0
    monkeypatch.delenv("CONTRASTLIB_HEAP_TRIM")
    if not heap_trim_available():
        pytest.skip("needs glibc's malloc_trim")
    eager, lazy = HeapTrimmer(interval_s=0.0), HeapTrimmer(interval_s=3600.0)
    assert [eager.step() for _ in range(3)] == [True] * 3 and eager.calls == 3
    assert [lazy.step() for _ in range(3)] == [False] * 3 and lazy.calls == 0


def test_encode_trims_after_batches_on_cpu_and_outputs_do_not_change(minilm, stsb_sentences, monkeypatch):
    texts = stsb_sentences[:50]
    made: list[HeapTrimmer] = []

    class EveryBatch(HeapTrimmer):
        def __init__(self) -> None:
            super().__init__(interval_s=0.0)
            self.enabled = True  # count the calls even where glibc is absent
            made.append(self)

    monkeypatch.setattr(text_module, "HeapTrimmer", EveryBatch)
    trimmed = minilm.encode(texts, batch_size=8)
    assert len(made) == 1 and made[0].calls == 7  # ceil(50 / 8) batches
    monkeypatch.setenv("CONTRASTLIB_HEAP_TRIM", "0")
    monkeypatch.setattr(text_module, "HeapTrimmer", HeapTrimmer)
    np.testing.assert_array_equal(minilm.encode(texts, batch_size=8), trimmed)
