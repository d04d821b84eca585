"""Helpers shared by the benchmark scripts (run as ``python scripts/bench_*.py``)."""

from __future__ import annotations

import multiprocessing as mp
import resource
from typing import Any


def in_child(target: Any, *args: Any) -> Any:
    """Run ``target(*args, queue)`` in a fresh spawned process and return what it puts.

    A fresh process per case keeps peak-RSS figures its own and imports cold."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    import queue

    while True:  # a child that dies without an answer must not hang the benchmark
        try:
            out = q.get(timeout=5)
            break
        except queue.Empty:
            if not p.is_alive():
                raise RuntimeError(f"{getattr(target, '__name__', target)}{args} died (exit code {p.exitcode})") from None
    p.join()
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
