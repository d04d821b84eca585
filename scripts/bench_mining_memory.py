"""Where the bf16 peak memory of ``contrastlib mine`` goes, and what padding costs.

Cold bf16 mining of SciFact train (the ``bench_mining.py`` job, ``--no-plot``), each case
its own process, the cases interleaved per repeat:

* ``st-bf16``: sentence-transformers' ``mine_hard_negatives`` under bf16 autocast;
* ``exact``: ours, every encode batch padded to its own longest text (the default);
* ``pad16`` / ``pad32``: ours with ``--pad-to-multiple-of 16`` / ``32``;
* ``mmap-threshold``: ours with ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc serves large
  blocks from mmap and returns them on free, instead of keeping them in its heap);
* ``no-token-budget``: ours with ``--token-budget 0``: every forward holds ``--batch-size``
  texts, as before the encoder capped a forward at 4,096 tokens on CPU (the default
  ``exact`` case has the cap);
* ``st-bf16-batch16``: sentence-transformers at batch 16, the rows our cap gives a batch of
  256-token texts (it does this for every batch, short ones included).

Then the speed cost of padding on short texts: encoding STS-B's train sentences in bf16
with each multiple, and with the token cap off (median of three passes, one process).

(At ``5301f6b`` the ``no-heap-trim`` case measured a ``malloc_trim`` after every encode
batch, since removed: 1,608 MB against 1,709 MB at 1.10x the time.)

    python scripts/bench_mining_memory.py --repeats 2 --out bench_out/mining_memory_input_order_shards.json
    python scripts/bench_mining_memory.py --repeats 3 --cases st-bf16 exact pad16 --no-short-texts \
        --out bench_out/mining_memory_sorted_shards.json
    python scripts/bench_mining_memory.py --repeats 3 --cases st-bf16 st-bf16-batch16 exact no-token-budget \
        --out bench_out/mining_memory_token_budget.json

(The first was run at ``c27cf16``, before the cache's shards followed the length order; the
second at ``872aac2``, before the encoder capped the tokens of a forward pass.)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bench_mining as bm
from _bench_common import in_child

CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "exact": ([], {}),
    "pad16": (["--pad-to-multiple-of", "16"], {}),
    "pad32": (["--pad-to-multiple-of", "32"], {}),
    "mmap-threshold": ([], {"MALLOC_MMAP_THRESHOLD_": "131072"}),
    "no-token-budget": (["--token-budget", "0"], {}),
}
ST_CASES = {"st-bf16": None, "st-bf16-batch16": 16}  # sentence-transformers, batch size (None: --batch-size)


def short_text_cost(sts: Path, threads: int) -> dict[str, Any]:
    import torch

    from contrastlib.encoders import TextEncoder

    torch.set_num_threads(threads)
    texts = sts_sentences(sts)
    enc = TextEncoder()
    enc.encode(texts[:256], batch_size=64, precision="bf16")  # warm-up
    seconds: dict[str, list[float]] = {}
    modes: list[tuple[str, int | None, int | None]] = [  # name, pad_to_multiple_of, token_budget
        ("exact", None, None), ("exact-no-token-budget", None, 0), ("8", 8, None), ("16", 16, None), ("32", 32, None)]
    for _ in range(3):
        for name, mult, budget in modes:
            start = time.perf_counter()
            enc.encode(texts, batch_size=64, precision="bf16", pad_to_multiple_of=mult, token_budget=budget)
            seconds.setdefault(name, []).append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"texts": len(texts), "seconds": seconds, "median": med,
            "slowdown": {k: v / med["exact"] for k, v in med.items()}}


def shard_widths(enc: Any, texts: list[str], batch_size: int) -> dict[str, Any]:
    """Encode widths ``texts`` meet with the cache's shards in input order (cache format 1)
    and in the cache's length order (format 2): distinct widths, and padded tokens per
    real token. ``enc``'s tokenizer only, deterministic."""
    from contrastlib.index.cache import EmbeddingCache, length_order

    shard_size = EmbeddingCache.__init__.__kwdefaults__["shard_size"]
    tokens = [len(x) for x in enc.tokenizer(texts, truncation=True, max_length=enc.max_seq_length)["input_ids"]]
    out: dict[str, Any] = {"texts": len(texts), "real_tokens": sum(tokens), "shard_size": shard_size}
    for name, order in (("input_order", list(range(len(texts)))), ("length_order", length_order(texts).tolist())):
        widths: list[int] = []
        for s in range(0, len(order), shard_size):
            shard = sorted((tokens[j] for j in order[s : s + shard_size]), reverse=True)  # encode's own sort
            widths += [shard[b] for b in range(0, len(shard), batch_size) for _ in shard[b : b + batch_size]]
        out[name] = {"distinct_widths": len(set(widths)), "padded_per_real_token": sum(widths) / sum(tokens)}
    return out


def sts_sentences(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return sorted({t for r in rows for t in r[:2]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/retrieval/scifact")
    ap.add_argument("--sts", default="../shared/data/sts/stsb/train.tsv")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=[*ST_CASES, *CASES], choices=[*ST_CASES, *CASES])
    ap.add_argument("--no-short-texts", action="store_true", help="skip the short-text timing")
    ap.add_argument("--max-queries", type=int, default=10**9)
    ap.add_argument("--max-corpus", type=int, default=10**9)
    ap.add_argument("--out", default="bench_out/mining_memory.json")
    args = ap.parse_args()
    a = vars(args)
    work = Path(tempfile.mkdtemp(prefix="bench_mining_memory_"))
    folder = bm.write_slice(a, work / "data")
    runs: dict[str, list[dict[str, Any]]] = {}
    from contrastlib.encoders import TextEncoder

    enc = TextEncoder()
    widths = {"scifact_corpus": shard_widths(enc, bm.load_pairs(a)[3], args.batch_size)}
    if Path(args.sts).is_file():
        widths["stsb_sentences"] = shard_widths(enc, sts_sentences(Path(args.sts)), args.batch_size)
    del enc  # the cases run in their own processes
    print("shard widths", json.dumps(widths), file=sys.stderr, flush=True)
    for r in range(args.repeats):
        for name in args.cases:
            cache, out = str(work / f"cache-{name}-{r}"), str(work / f"{name}-{r}.jsonl")
            if name in ST_CASES:
                res = in_child(bm.run_st, {**a, "batch_size": ST_CASES[name] or a["batch_size"]}, "bf16", cache, out)
            else:
                extra, env = CASES[name]
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)  # read by the child's allocator at its start
                try:
                    res = in_child(bm.run_ours, a, "auto", cache, out, str(folder), ["--no-plot", *extra])
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
            runs.setdefault(name, []).append(res)
            print(name, r, json.dumps(res), file=sys.stderr, flush=True)
    report: dict[str, Any] = {"batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
                              "shard_widths": widths, "cases": {}}
    for name, rs in runs.items():
        report["cases"][name] = {"seconds_median": statistics.median(x["seconds"] for x in rs),
                                 "peak_rss_mb_median": statistics.median(x["peak_rss_mb"] for x in rs),
                                 "peak_rss_mb_range": [min(x["peak_rss_mb"] for x in rs), max(x["peak_rss_mb"] for x in rs)],
                                 "runs": rs}
    if "exact" in args.cases:
        exact = bm.triplets(str(work / "exact-0.jsonl"))
        report["triplets_shared_with_exact"] = {
            n: len(exact & bm.triplets(str(work / f"{n}-0.jsonl"))) for n in args.cases if n != "exact"}
        report["triplets_exact"] = len(exact)
    if Path(args.sts).is_file() and not args.no_short_texts:
        report["short_texts"] = in_child(_short, str(args.sts), args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'case (bf16, cold)':<18} {'wall s':>8} {'peak MB':>8}  range")
    for name, c in report["cases"].items():
        lo, hi = c["peak_rss_mb_range"]
        print(f"{name:<18} {c['seconds_median']:>8.1f} {c['peak_rss_mb_median']:>8.0f}  {lo:.0f}-{hi:.0f}")
    for name, w in widths.items():
        print(f"{name}: padded tokens per real token {w['input_order']['padded_per_real_token']:.3f} (input-order "
              f"shards) / {w['length_order']['padded_per_real_token']:.3f} (length-order)")
    for mult, x in report.get("short_texts", {}).get("slowdown", {}).items():
        print(f"short texts, {mult if not mult[0].isdigit() else 'pad to ' + mult}: {x:.2f}x the exact-width time")


def _short(sts: str, threads: int, q: Any) -> None:
    q.put(short_text_cost(Path(sts), threads))


if __name__ == "__main__":
    main()
