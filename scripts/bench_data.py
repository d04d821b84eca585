"""Start-up time and peak memory of training on a Parquet triplet file, by row count.

For each size (default 100k, 1M and 10M rows) a Parquet file of (anchor, positive,
negative) triplets is generated once (row groups of 100k rows, written streaming), then
each case runs ``contrastlib fit simcse-snli data.train=FILE`` in a process of its own under
``/usr/bin/time`` (wall clock and peak RSS of the process):

* ``dry-run-cold``: ``--dry-run`` (read and check the data, build nothing) with an empty
  ``CONTRASTLIB_CACHE``: the first run on a file converts its Parquet into an Arrow file
  in that cache, one row group at a time;
* ``dry-run``: the same again (the converted file mapped as it is);
* ``steps``: 20 training steps of all-MiniLM-L6-v2 at batch 32 with the default sampler
  (no duplicates), no evaluation, the converted file in the cache: the whole command
  (imports, data, model, 20 steps, the model's export).

"Start-up" is the ``dry-run`` case: from the process's start to a checked plan (data read
and checked, sampler options checked), the part of a run that grows with the data.

    python scripts/bench_data.py --sizes 100000 1000000 10000000 --out bench_out/data.json

The goal in docs/benchmarks.md: peak RSS at 10M within 300 MB of that at 100k, start-up
under 10 s at 10M.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORDS = ["the", "a", "one", "some", "every", "blue", "small", "quick", "tall", "old", "new", "red", "green", "dark", "bright", "cold", "warm", "river", "city", "dog", "cat", "house", "road", "tree", "book", "song", "child", "market", "garden", "window", "bridge"]


def sentence(i: int, salt: int) -> str:
    """A varied, deterministic sentence (about 60 characters)."""
    x = (i * 2654435761 + salt * 40503) & 0xFFFFFFFF
    words = [WORDS[(x >> (3 * k)) % len(WORDS)] for k in range(8)]
    return f"{' '.join(words)} number {i} topic {x % 9973}"


def generate(path: Path, rows: int, group: int = 100_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([("anchor", pa.string()), ("positive", pa.string()), ("negative", pa.string())])
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, group):
            ids = range(start, min(rows, start + group))
            writer.write_table(pa.table({
                "anchor": [sentence(i, 1) for i in ids],
                "positive": [sentence(i, 2) for i in ids],
                "negative": [sentence(i, 3) for i in ids],
            }, schema=schema))
    os.replace(tmp, path)


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall seconds and peak RSS (MB) of ``cmd`` in its own process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        start = time.time()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M %e", "-o", out.name, *cmd], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        rss_kb, wall = out.read().split()[-2:]
    return {"wall_s": float(wall), "peak_rss_mb": int(rss_kb) / 1024, "started": start, "stdout": proc.stdout}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--work", default="bench_out/data")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="bench_out/data.json")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for n in a.sizes:
        parquet = work / f"triplets-{n}.parquet"
        t = time.time()
        generate(parquet, n)
        print(f"{n:>11,} rows: {parquet} ({parquet.stat().st_size / 1e6:.0f} MB, {time.time() - t:.0f} s to write)",
              flush=True)
        cache = work / f"cache-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        env = {**os.environ, "CONTRASTLIB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        base = [sys.executable, "-m", "contrastlib", "fit", "simcse-snli", f"data.train={parquet}",
                f"output_dir={work / 'runs'}", "eval.sts=[]", "trainer.enable_progress_bar=false"]
        for case, extra in [("dry-run-cold", ["--dry-run"]), ("dry-run", ["--dry-run"]),
                            ("steps", [f"name=steps-{n}", f"trainer.max_steps={a.steps}", "data.batch_size=32",
                                       "trainer.log_every_n_steps=1", "trainer.checkpoint_every_n_steps=100000"])]:
            shutil.rmtree(work / "runs" / f"steps-{n}", ignore_errors=True)
            r = timed(base + extra, env)
            row = {"rows": n, "case": case, "wall_s": r["wall_s"], "peak_rss_mb": round(r["peak_rss_mb"], 1)}
            if case == "steps":
                metrics = next((work / "runs" / f"steps-{n}").rglob("metrics.csv"))
                lines = metrics.read_text().splitlines()
                row["logged_steps"] = len(lines) - 1
            results.append(row)
            print(f"  {case:<13} wall {row['wall_s']:7.1f} s  peak RSS {row['peak_rss_mb']:8.1f} MB", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
