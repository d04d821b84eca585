"""How a training step encodes its text views: one padded forward per view, length-sorted
groups per view, or all views pooled and grouped together. Times forward + backward of
supervised SimCSE (InfoNCE, temperature 0.05) on real SNLI triplet batches with
all-MiniLM-L6-v2, in fp32 and under bf16 autocast, and counts padded tokens.

    python scripts/bench_grouping.py --data ../shared/data/nli/snli-dev.tsv --batches 8
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from contrastlib.data import read_tuples
from contrastlib.encoders import TextEncoder
from contrastlib.losses import info_nce
from contrastlib.training.gradcache import embed_in_chunks, split_rows


def pool_views(views: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    width = max(v["input_ids"].shape[1] for v in views)
    return {
        k: torch.cat([torch.nn.functional.pad(v[k], (0, width - v[k].shape[1])) for v in views])
        for k in views[0]
    }


def step(enc: TextEncoder, views: list[dict[str, torch.Tensor]], mode: str, group: int | None) -> tuple[float, int]:
    if mode == "per-view":
        chunks = [split_rows(v, group, None) if group else [(torch.arange(len(v["input_ids"])), v)] for v in views]
        embs = [embed_in_chunks(enc, c) for c in chunks]
        tokens = sum(int(c["input_ids"].numel()) for cs in chunks for _, c in cs)
    else:
        pooled = pool_views(views)
        chunks_p = split_rows(pooled, group, None)
        embs = list(embed_in_chunks(enc, chunks_p).split([len(v["input_ids"]) for v in views]))
        tokens = sum(int(c["input_ids"].numel()) for _, c in chunks_p)
    loss = info_nce(embs[0], torch.cat(embs[1:]), temperature=0.05)
    loss.backward()
    return float(loss), tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/nli/snli-dev.tsv")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows, _ = read_tuples(args.data)
    random.Random(0).shuffle(rows)
    enc = TextEncoder("all-MiniLM-L6-v2", max_seq_length=64)
    enc.train()
    batches = [
        [enc.tokenize([r[c] for r in rows[i : i + args.batch_size]]) for c in range(3)]
        for i in range(0, args.batches * args.batch_size, args.batch_size)
    ]
    cases = [("per-view", None), ("per-view", 16), ("pooled", 16), ("pooled", 32), ("pooled", 48), ("pooled", 64)]
    print(f"threads {torch.get_num_threads()}, {args.batches} batches of {args.batch_size} triplets")
    print(f"{'precision':<9} {'mode':<9} {'group':>5} {'s/step':>7} {'padded tokens':>14}")
    for precision in ("fp32", "bf16"):
        for mode, group in cases:
            step(enc, batches[0], mode, group)  # warm-up
            enc.zero_grad()
            start, tokens = time.perf_counter(), 0
            for views in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    _, t = step(enc, views, mode, group)
                tokens += t
                enc.zero_grad()
            per_step = (time.perf_counter() - start) / len(batches)
            print(f"{precision:<9} {mode:<9} {group or '-':>5} {per_step:>7.3f} {tokens:>14,}")


if __name__ == "__main__":
    main()
