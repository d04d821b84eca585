"""Forward + backward time of one reward batch (32 HH-RLHF pairs = 64 fitted texts) under
bf16 autocast, by batching and dropout: one call padded to the longest text (TRL's way)
against length-sorted groups of 32 and 16 rows (``trainer.length_group_rows``).

Needs the fitted texts that ``scripts/bench_reward.py`` writes
(``bench_out/reward-data/train-fitted.jsonl``). Six batches after one warm-up, 2 threads.

    python scripts/bench_reward_batching.py
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from contrastlib.encoders.text import TextEncoder
from contrastlib.training.gradcache import embed_in_chunks, split_rows


def step(enc: TextEncoder, batch: dict[str, torch.Tensor], group: int | None) -> float:
    """Seconds for one forward and backward of ``batch``, in groups of ``group`` rows."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = embed_in_chunks(enc, split_rows(batch, group, None)) if group else enc(batch)
    emb.float().sum().backward()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="bench_out/reward-data/train-fitted.jsonl")
    p.add_argument("--batches", type=int, default=6)
    a = p.parse_args()
    torch.set_num_threads(2)
    rows = [json.loads(x) for x in Path(a.data).read_text().splitlines()]
    random.Random(0).shuffle(rows)
    results: dict[str, Any] = {}
    for dropout in (0.1, 0.0):
        enc = TextEncoder("all-MiniLM-L6-v2", max_seq_length=256, dropout=dropout)
        enc.train()
        batches = []
        for i in range(a.batches + 1):
            texts = [t for r in rows[i * 32 : (i + 1) * 32] for t in (r["chosen"], r["rejected"])]
            batches.append(dict(enc.tokenizer(texts, padding=True, truncation=True, max_length=256,
                                              return_tensors="pt")))

        step(enc, batches[0], None)  # warm-up
        for group in (None, 32, 16):
            seconds = [step(enc, b, group) for b in batches[1:]]
            key = f"dropout={dropout} groups={group or 'one padded call'}"
            results[key] = round(sum(seconds) / len(seconds), 2)
            print(f"{key}: {results[key]} s per batch", flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
