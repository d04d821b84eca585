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
    """This process's peak resident memory, MB: Linux's ``VmHWM``, else ``ru_maxrss``.

    Not ``ru_maxrss`` where ``VmHWM`` exists: a spawned process is forked first, and Linux
    carries the parent's peak across the ``exec`` into the child's ``ru_maxrss``, so a
    child of a parent that once held 3 GB reports at least 3 GB (measured; the figures in
    docs/benchmarks.md from before 2026-12-08 came from parents that held little)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def triplets(path: str) -> set[tuple[str, str, str]]:
    """The (anchor, positive, negative) triplets of a mined JSONL file, as a set."""
    import json

    with open(path) as fh:
        return {(r["anchor"], r["positive"], r["negative"]) for r in map(json.loads, fh)}
