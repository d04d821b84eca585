"""Helpers shared by the benchmark scripts (run as ``python scripts/bench_*.py``)."""

from __future__ import annotations

import multiprocessing as mp
import resource
from typing import Any


def in_child(target: Any, *args: Any, limit_mb: float | None = None) -> Any:
    """Run ``target(*args, queue)`` in a fresh spawned process and return what it puts.

    A fresh process per case keeps peak-RSS figures its own and imports cold. With
    ``limit_mb``, the process is stopped once its resident memory passes it, and the answer
    is ``{"stopped_at_mb": ..., "seconds": ...}``."""
    import queue
    import threading
    import time

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    seen = {"max_mb": 0.0, "stopped": False}

    def watch() -> None:
        while limit_mb is not None and p.is_alive():
            try:
                with open(f"/proc/{p.pid}/status") as fh:
                    rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
            except (OSError, StopIteration):
                return
            seen["max_mb"] = max(seen["max_mb"], rss)
            if rss > limit_mb:
                seen["stopped"] = True
                p.kill()
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    start = time.perf_counter()
    while True:  # a child that dies without an answer must not hang the benchmark
        try:
            out = q.get(timeout=2)
            break
        except queue.Empty:
            if not p.is_alive():
                if seen["stopped"]:
                    return {"stopped_at_mb": round(seen["max_mb"]), "seconds": time.perf_counter() - start}
                raise RuntimeError(f"{getattr(target, '__name__', target)}{args} died (exit code {p.exitcode})") from None
    p.join()
    return out


def run_cli(args: list[str]) -> tuple[int, float, dict[str, Any]]:
    """``contrastlib ARGS --json`` in this process: ``(exit code, seconds, its JSON summary)``."""
    import io
    import json
    import time
    from contextlib import redirect_stdout

    from contrastlib.cli.main import main

    buf = io.StringIO()
    start = time.perf_counter()
    with redirect_stdout(buf):
        code = main([*args, "--json"])
    seconds = time.perf_counter() - start
    return code, seconds, json.loads(buf.getvalue().strip().splitlines()[-1]) if code == 0 else {}


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
