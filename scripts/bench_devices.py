"""``contrastlib embed`` in one process against ``--devices N``: wall time on the same texts,
each run cold (its own fresh embedding cache), interleaved, the outputs compared.

    python scripts/bench_devices.py --input ../shared/data/retrieval/scifact/corpus.jsonl \\
        --devices cpu,cpu --repeats 2 --out bench_out/devices.json

``--input`` is a text file (one text per line) or a BEIR ``corpus.jsonl`` (its documents'
``title + text``). Each run is ``python -m contrastlib embed`` in a process of its own, timed
from start to exit (imports and model loading included, as a user sees it); the pool's
workers load the model too, which is part of what ``--devices`` costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def texts_of(path: Path, limit: int | None) -> list[str]:
    if path.name.endswith(".jsonl"):
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            text = f"{rec.get('title') or ''} {rec.get('text') or ''}".strip()
            if text:
                out.append(" ".join(text.split()))  # one line per text
        return out[:limit]
    return [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()][:limit]


def run(model: str, inputs: Path, out: Path, cache: Path, precision: str, shard: int, devices: str | None) -> float:
    cmd = [sys.executable, "-m", "contrastlib", "embed", "-m", model, "-i", str(inputs), "-o", str(out),
           "--cache-dir", str(cache), "--shard-size", str(shard), "--precision", precision, "--no-progress"]
    if devices:
        cmd += ["--devices", devices]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default="../shared/data/retrieval/scifact/corpus.jsonl")
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--devices", default="cpu,cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--limit", type=int, default=None, help="first N texts")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="bench_out/devices.json")
    a = ap.parse_args()
    texts = texts_of(Path(a.input), a.limit)
    work = Path(tempfile.mkdtemp(prefix="bench_devices_"))
    (work / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    times: dict[str, list[float]] = {"one": [], "pool": []}
    for r in range(a.repeats):  # interleaved, every run cold
        for name, devices in (("one", None), ("pool", a.devices)):
            times[name].append(run(a.model, work / "texts.txt", work / f"{name}.npy", work / f"cache-{name}-{r}",
                                   a.precision, a.shard_size, devices))
    same = bool(np.array_equal(np.load(work / "one.npy"), np.load(work / "pool.npy")))
    report = {"args": vars(a), "n_texts": len(texts), "cpu_count": os.cpu_count(), "seconds": times,
              "best": {k: min(v) for k, v in times.items()}, "bitwise_equal": same}
    print(f"{len(texts)} texts, {a.model}, {a.precision}, shards of {a.shard_size}, {os.cpu_count()} CPUs")
    for name in ("one", "pool"):
        label = "one process" if name == "one" else f"--devices {a.devices}"
        print(f"{label:<24} best {min(times[name]):7.1f} s   runs {', '.join(f'{t:.1f}' for t in times[name])}")
    print(f"ratio one / pool: {min(times['one']) / min(times['pool']):.2f}x; outputs bitwise equal: {same}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
