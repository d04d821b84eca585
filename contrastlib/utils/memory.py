"""Handing freed heap memory back to the operating system during long CPU inference.

Encoding a corpus on CPU frees the activations of every batch, but glibc keeps those
blocks in its heap. When the next batch has another width, its tensors do not fit the
holes, so the heap grows batch after batch: cold bf16 mining of SciFact rose from 1.0 to
1.6 GB of RSS with ~0.4 GB in use (docs/benchmarks.md, "Where the bf16 peak goes").
``malloc_trim(0)`` returns those free pages; it costs a few milliseconds, so
:class:`HeapTrimmer` calls it at most once per interval.

Set ``CONTRASTLIB_HEAP_TRIM=0`` to turn it off (benchmarks compare both). Elsewhere than
glibc (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any

_LIBC: Any = None
_LOADED = False


def _malloc_trim() -> Any:
    global _LIBC, _LOADED
    if not _LOADED:
        _LOADED = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                _LIBC = libc.malloc_trim  # absent on musl: AttributeError
                _LIBC.argtypes = [ctypes.c_size_t]
                _LIBC.restype = ctypes.c_int
            except (OSError, AttributeError):
                _LIBC = None
    return _LIBC


def heap_trim_available() -> bool:
    """Whether this process's C library has ``malloc_trim`` (glibc)."""
    return _malloc_trim() is not None


def heap_trim_enabled() -> bool:
    """Whether trimming is on: glibc present and ``CONTRASTLIB_HEAP_TRIM`` not ``0``."""
    return os.environ.get("CONTRASTLIB_HEAP_TRIM", "1") != "0" and heap_trim_available()


def trim_heap() -> bool:
    """Give the heap's free pages back to the system now; False where that is not possible."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


class HeapTrimmer:
    """Call :meth:`step` after each batch: it trims when ``interval_s`` has passed since the
    last trim (so on short batches the cost stays a small share of the time), and never
    when trimming is off (see the module docstring)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.enabled = heap_trim_enabled()
        self.calls = 0
        self._last = time.monotonic()

    def step(self) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return False
        trim_heap()
        self.calls += 1
        self._last = time.monotonic()
        return True
