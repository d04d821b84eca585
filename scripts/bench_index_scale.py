"""Scale of the FAISS layer (``contrastlib.index``): a synthetic corpus of 1,000,000 unit
vectors (384 dims) searched from 10,000 queries, in one process, on this CPU.

Exact top-10 from ``flat`` (batched; checked against numpy brute force on a sample of
queries) is the reference. ``hnsw`` (efSearch sweep), ``ivf_flat`` (nprobe sweep) and
``ivf_pq`` are each built (train + add), searched and scored by recall@10 against it:
the mean over queries of |ids & exact ids| / 10. An index is freed before the next kind is
built, so peak memory is the corpus plus the largest index, not the sum.

Data (seeded, generated in chunks into one preallocated float32 array, L2-normalised):

* ``--corpus clustered`` (default): a mixture of ``--clusters`` Gaussian clusters around
  random unit centres, ``x = normalise(c + spread * g / sqrt(d))``; real embeddings are
  clustered. At the default spread 2 the clusters overlap in part: a vector's cosine to
  its centre is 1 / sqrt(1 + spread^2) = 0.45, to another vector of its cluster 0.2 on
  average, to the rest 0 +- 0.05; at spread 1 they are apart and HNSW and IVF-Flat find
  nearly all of the exact top-10 (>= 0.998 at 100k vectors). Within a cluster the vectors
  are isotropic in all 384 dims, unlike real embeddings (low intrinsic dimension): this
  favours IVF (a few cells hold a cluster) over HNSW (little local structure to follow),
  so compare settings within one kind, not kinds across data.
  ``--corpus uniform``: uniform on the sphere.
* ``--queries near`` (default): a random corpus vector plus Gaussian noise of norm
  ``--noise``, renormalised, as real queries relate to their corpus. ``--queries random``:
  uniform on the sphere; in 384 dims these are nearly orthogonal to everything, the
  top-10 scores barely differ and recall is a pessimistic, mostly meaningless figure.

Memory: the stated bound (printed, term by term) is the RSS before the corpus plus the
corpus, queries, results, the IVF training sample (x3, faiss' copies), twice the largest
index payload (a std::vector that grows by doubling holds its old and new buffers while
it copies), search buffers and 256 MiB. Peak RSS is read from VmHWM / ru_maxrss, reset
(``/proc/self/clear_refs``) before each kind so each row shows its own peak; the process
peak is the largest of them. The script exits 1 when the process peak exceeds the bound.

``--gpu``: also builds ``flat`` on the GPU (``VectorIndex(use_gpu=True)``), searches the
same queries and reports id agreement with the CPU flat search and the time ratio.

    nice -n 5 python scripts/bench_index_scale.py --json bench_out/index_scale.json
    python scripts/bench_index_scale.py --n 20000 --nq 200   # smoke run, seconds
    python scripts/bench_index_scale.py --render bench_out/index_scale.json   # tables again
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Before faiss loads libgomp: OpenMP threads that spin while they wait take the cores of a
# shared machine from the threads doing the work (PQ training ran 7x slower here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from contrastlib.index import IndexSpec, VectorIndex

CHUNK = 65_536  # rows generated / added per step
MiB = 1 << 20
SLACK = 256 * MiB
GPU_HOST_ALLOWANCE = 4 << 30  # CUDA context and pinned staging buffers on the host


@dataclass
class Config:
    n: int = 1_000_000
    dim: int = 384
    nq: int = 10_000
    k: int = 10
    corpus: str = "clustered"  # clustered | uniform
    clusters: int = 1000
    spread: float = 2.0
    queries: str = "near"  # near | random
    noise: float = 0.5
    kinds: tuple[str, ...] = ("flat", "hnsw", "ivf_flat", "ivf_pq")
    nlist: int = 0  # 0: power of two nearest 4 sqrt(n)
    nprobes: tuple[int, ...] = (8, 32, 128)
    hnsw_m: int = 32
    ef_construction: int = IndexSpec().ef_construction
    ef_searches: tuple[int, ...] = (32, 64, 128)
    pq_bytes: int = 48
    pq_nprobe: int = 32
    train_size: int = 0  # 0: min(n, 39 nlist), faiss' minimum for k-means
    threads: int = 2
    batch_size: int = 4_096  # queries per search batch
    check_queries: int = 100  # flat vs numpy brute force on this many queries
    gpu: bool = False
    seed: int = 0

    def resolved_nlist(self) -> int:
        return self.nlist or max(1, 2 ** round(math.log2(4 * math.sqrt(self.n))))

    def resolved_train_size(self) -> int:
        return min(self.n, self.train_size or 39 * self.resolved_nlist())


# ---------------------------------------------------------------------- memory
def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_bytes() -> int:
    """Peak RSS since the last :func:`reset_peak` (ru_maxrss follows the reset on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    """Start a new peak-RSS window (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so a freed index does not stay resident."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def estimate_index_bytes(kind: str, cfg: Config) -> int:
    """Payload of a ``kind`` index of ``cfg.n`` vectors, known before building it."""
    n, d, nlist = cfg.n, cfg.dim, cfg.resolved_nlist()
    vectors = n * d * 4
    if kind == "flat":
        return vectors
    if kind == "hnsw":
        # level 0 holds 2M links, upper levels M each (a node reaches level l with
        # probability M^-l): < 2M + 2 int32 links; offsets (8 B), levels (4 B), add-time locks (8 B)
        return vectors + n * (4 * (2 * cfg.hnsw_m + 2) + 20)
    if kind == "ivf_flat":
        return n * (d * 4 + 8) + nlist * d * 4
    if kind == "ivf_pq":
        return n * (cfg.pq_bytes + 8) + nlist * d * 4 + 256 * d * 4
    raise ValueError(kind)


def memory_bound(cfg: Config, base: int) -> dict[str, int]:
    """The stated bound on peak RSS, term by term (bytes); ``total`` is their sum."""
    trained = [kd for kd in cfg.kinds if kd in ("ivf_flat", "ivf_pq")]
    max_nprobe = max((*cfg.nprobes, cfg.pq_nprobe))
    terms = {
        "base (RSS before the corpus)": base,
        "corpus n x d x 4": cfg.n * cfg.dim * 4,
        "generation chunk + temporaries": 2 * CHUNK * cfg.dim * 4,
        "queries (+ noise temporary)": 2 * cfg.nq * cfg.dim * 4,
        "results: exact + current ids, scores": 2 * cfg.nq * cfg.k * 12,
        "IVF training sample x3": 3 * cfg.resolved_train_size() * cfg.dim * 4 if trained else 0,
        "largest index payload x2 (vector growth)": 2 * max(estimate_index_bytes(kd, cfg) for kd in cfg.kinds),
        "search buffers": 2 * cfg.batch_size * (cfg.k + max_nprobe) * 12 + 4096 * 1024 * 4 + cfg.threads * cfg.n
        + cfg.check_queries * CHUNK * 32,
        "allocator / OpenMP / BLAS slack": SLACK,
    }
    if cfg.gpu:
        terms["GPU: CUDA context, pinned buffers (host)"] = GPU_HOST_ALLOWANCE
    terms["total"] = sum(terms.values())
    return terms


def memory_ok(peak: int, bound: int) -> bool:
    return peak <= bound


def index_bytes(index: VectorIndex) -> int:
    """Payload of a built index (``VectorIndex.nbytes``: read from its structures, not
    serialised; ``serialize_index`` would copy the whole index in memory)."""
    return index.nbytes


# ---------------------------------------------------------------------- data
def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_corpus(cfg: Config) -> np.ndarray:
    """``[n, dim]`` float32 unit vectors, filled chunk by chunk into one array."""
    rng = np.random.default_rng(cfg.seed)
    d = cfg.dim
    centres = _normalise(rng.standard_normal((cfg.clusters, d), dtype=np.float32)) if cfg.corpus == "clustered" else None
    out = np.empty((cfg.n, d), dtype=np.float32)
    for start in range(0, cfg.n, CHUNK):
        part = out[start : start + CHUNK]
        rng.standard_normal(part.shape, dtype=np.float32, out=part)
        if centres is not None:
            part *= np.float32(cfg.spread / math.sqrt(d))
            part += centres[rng.integers(cfg.clusters, size=len(part))]
        _normalise(part)
    return out


def make_queries(cfg: Config, corpus: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(queries [nq, dim], source corpus rows or None)``."""
    rng = np.random.default_rng(cfg.seed + 1)
    noise = rng.standard_normal((cfg.nq, cfg.dim), dtype=np.float32)
    if cfg.queries == "random":
        return _normalise(noise), None
    sources = rng.choice(cfg.n, size=cfg.nq, replace=False)
    noise *= np.float32(cfg.noise / math.sqrt(cfg.dim))
    noise += corpus[sources]
    return _normalise(noise), sources


def recall_at_k(ids: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |ids & exact| / k (-1 ids never match)."""
    hits = (ids[:, :, None] == exact[:, None, :]).any(axis=2) & (ids >= 0)
    return float(hits.sum(axis=1).mean() / exact.shape[1])


def brute_force(corpus: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by numpy, a running top-k over corpus chunks."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(corpus), CHUNK):
        s = queries @ corpus[start : start + CHUNK].T
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + s.shape[1]), s.shape)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


# ---------------------------------------------------------------------- benchmark
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _build(cfg: Config, spec: IndexSpec, corpus: np.ndarray, use_gpu: bool, log: Callable[[str], None]) -> tuple[VectorIndex, float, float]:
    index = VectorIndex(cfg.dim, spec, use_gpu=use_gpu)
    train_s = 0.0
    if spec.trained:
        rows = np.sort(np.random.default_rng(cfg.seed + 2).choice(cfg.n, spec.train_size, replace=False))
        sample = corpus[rows]
        t0 = time.perf_counter()
        index.train(sample)
        train_s = time.perf_counter() - t0
        del sample
        log(f"  {spec.kind}: trained on {spec.train_size:,} vectors in {train_s:.1f} s")
    t0 = time.perf_counter()
    for start in range(0, cfg.n, CHUNK):  # chunked, so the finiteness check stays small
        index.add(corpus[start : start + CHUNK], batch_size=CHUNK)
        done = min(start + CHUNK, cfg.n)
        if done % (8 * CHUNK) == 0 or done == cfg.n:
            log(f"  {spec.kind}: added {done:,}/{cfg.n:,} in {time.perf_counter() - t0:.1f} s")
    return index, train_s, time.perf_counter() - t0


def _search(index: VectorIndex, queries: np.ndarray, cfg: Config) -> tuple[np.ndarray, np.ndarray, float]:
    t0 = time.perf_counter()
    scores, ids = index.search(queries, cfg.k, batch_size=cfg.batch_size)
    return scores, ids, time.perf_counter() - t0


def _set(index: VectorIndex, **params: int) -> None:
    index.spec = dataclasses.replace(index.spec, **params)
    index._set_search_parameters()


def run_benchmark(cfg: Config, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Build, search and score every kind in ``cfg.kinds``; returns the report."""
    import faiss

    faiss.omp_set_num_threads(cfg.threads)
    kinds = ["flat", *(kd for kd in ("hnsw", "ivf_flat", "ivf_pq") if kd in cfg.kinds)]
    nlist, train_size = cfg.resolved_nlist(), cfg.resolved_train_size()
    cfg = dataclasses.replace(cfg, kinds=tuple(kinds))
    can_reset = reset_peak()
    base = rss_bytes()
    bound = memory_bound(cfg, base)
    report: dict[str, Any] = {
        "config": {**asdict(cfg), "nlist": nlist, "train_size": train_size},
        "faiss": faiss.__version__,
        "omp_threads": faiss.omp_get_max_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "peak_reset_per_kind": can_reset,
        "bound": bound,
        "rows": [],
    }
    peaks: list[int] = []

    def step_peak() -> int:
        peaks.append(peak_bytes())
        return peaks[-1]

    log(f"generating {cfg.corpus} corpus {cfg.n:,} x {cfg.dim} and {cfg.nq:,} {cfg.queries} queries")
    t0 = time.perf_counter()
    corpus = make_corpus(cfg)
    queries, sources = make_queries(cfg, corpus)
    report["generate_s"] = time.perf_counter() - t0
    report["setup_peak_bytes"] = step_peak()
    report["data_rss_bytes"] = rss_bytes()

    def row(kind: str, params: str, build: tuple[float, float] | None, search_s: float, ids: np.ndarray, nbytes: int, growth: int, **extra: Any) -> None:
        r = {
            "kind": kind,
            "params": params,
            "train_s": build[0] if build else None,
            "add_s": build[1] if build else None,
            "build_s": sum(build) if build else None,
            "search_s": search_s,
            "qps": cfg.nq / search_s,
            "recall_at_k": recall_at_k(ids, exact_ids),
            "index_bytes": nbytes,
            "rss_growth_bytes": growth,
            "peak_rss_bytes": step_peak(),
            **extra,
        }
        report["rows"].append(r)
        log(f"  {kind} {params}: search {search_s:.1f} s, recall@{cfg.k} {r['recall_at_k']:.4f}, peak RSS {r['peak_rss_bytes'] / 1e6:,.0f} MB")

    # ---- exact reference
    for kind in kinds:
        release_freed_memory()
        reset_peak()
        before = rss_bytes()
        log(f"{kind}: building")
        if kind == "flat":
            index, train_s, add_s = _build(cfg, IndexSpec("flat"), corpus, False, log)
            growth, nbytes = rss_bytes() - before, index_bytes(index)
            exact_scores, exact_ids, search_s = _search(index, queries, cfg)
            m = min(cfg.check_queries, cfg.nq)
            extra: dict[str, Any] = {}
            if m:
                bf_scores, bf_ids = brute_force(corpus, queries[:m], cfg.k)
                extra["numpy_check_queries"] = m
                extra["numpy_check_recall"] = recall_at_k(exact_ids[:m], bf_ids)
                extra["numpy_check_max_score_diff"] = float(np.abs(exact_scores[:m] - bf_scores).max())
            if sources is not None:
                extra["source_is_top1"] = float((exact_ids[:, 0] == sources).mean())
            extra["top1_score_mean"] = float(exact_scores[:, 0].mean())
            extra[f"top{cfg.k}_score_mean"] = float(exact_scores[:, -1].mean())
            row("flat", "exact", (train_s, add_s), search_s, exact_ids, nbytes, growth, **extra)
            cpu_flat_s = search_s
            del index
            if cfg.gpu:
                release_freed_memory()
                reset_peak()
                log("flat (GPU): building")
                gindex, train_s, add_s = _build(cfg, IndexSpec("flat"), corpus, True, log)
                gindex.search(queries[: min(cfg.batch_size, cfg.nq)], cfg.k)  # warm-up: CUDA kernels
                g_scores, g_ids, gsearch_s = _search(gindex, queries, cfg)
                row("flat (GPU)", "exact", (train_s, add_s), gsearch_s, g_ids, cfg.n * cfg.dim * 4, 0,
                    ids_equal_rows=float((g_ids == exact_ids).all(axis=1).mean()),
                    max_score_diff_vs_cpu=float(np.abs(g_scores - exact_scores).max()),
                    cpu_over_gpu_time=cpu_flat_s / gsearch_s)
                del gindex, g_scores, g_ids
            continue
        if kind == "hnsw":
            spec = IndexSpec("hnsw", m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_searches[0])
            sweep = [("ef_search", e, f"M={cfg.hnsw_m}, efC={cfg.ef_construction}, efSearch={e}") for e in cfg.ef_searches]
        elif kind == "ivf_flat":
            spec = IndexSpec("ivf_flat", nlist=nlist, nprobe=cfg.nprobes[0], train_size=train_size, seed=cfg.seed)
            sweep = [("nprobe", p, f"nlist={nlist}, nprobe={p}") for p in cfg.nprobes]
        else:
            spec = IndexSpec("ivf_pq", nlist=nlist, nprobe=cfg.pq_nprobe, pq_bytes=cfg.pq_bytes, train_size=train_size, seed=cfg.seed)
            sweep = [("nprobe", cfg.pq_nprobe, f"nlist={nlist}, {cfg.pq_bytes} B/vector, nprobe={cfg.pq_nprobe}")]
        index, train_s, add_s = _build(cfg, spec, corpus, False, log)
        growth, nbytes = rss_bytes() - before, index_bytes(index)
        for i, (name, value, params) in enumerate(sweep):
            _set(index, **{name: value})
            _, ids, search_s = _search(index, queries, cfg)
            row(kind, params, (train_s, add_s) if i == 0 else None, search_s, ids, nbytes, growth)
        del index, ids
    release_freed_memory()
    report["process_peak_bytes"] = max(peaks)
    report["bound_checked"] = bound["total"]
    report["memory_ok"] = memory_ok(report["process_peak_bytes"], bound["total"])
    return report


# ---------------------------------------------------------------------- output
def markdown(report: dict[str, Any]) -> str:
    c = report["config"]
    out = [
        "| index | parameters | build s | search s | queries/s | recall@{k} | index MB | peak RSS MB |".format(k=c["k"]),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        build = f"{r['build_s']:.1f}" if r["build_s"] is not None else "(same index)"
        if r["train_s"]:
            build += f" ({r['train_s']:.1f} train)"
        out.append(
            f"| {r['kind']} | {r['params']} | {build} | {r['search_s']:.1f} | {r['qps']:,.0f} | "
            f"{r['recall_at_k']:.4f} | {r['index_bytes'] / 1e6:,.0f} | {r['peak_rss_bytes'] / 1e6:,.0f} |"
        )
    return "\n".join(out)


def summary(report: dict[str, Any]) -> str:
    c, b = report["config"], report["bound"]
    flat = report["rows"][0]
    lines = [
        f"corpus: {c['corpus']} ({c['clusters']} clusters, spread {c['spread']})" if c["corpus"] == "clustered" else "corpus: uniform on the sphere",
        f"  {c['n']:,} x {c['dim']} float32, unit norm, seed {c['seed']}",
        f"queries: {c['nq']:,} {c['queries']}" + (f" (corpus vector + noise of norm {c['noise']}, renormalised)" if c["queries"] == "near" else " (uniform on the sphere)"),
        f"k = {c['k']}; faiss {report['faiss']}, {report['omp_threads']} OpenMP threads "
        f"(OMP_WAIT_POLICY={report['omp_wait_policy'] or 'unset'}); search batch {c['batch_size']}",
        f"exact top-1 score mean {flat['top1_score_mean']:.3f}, top-{c['k']} {flat['top' + str(c['k']) + '_score_mean']:.3f}"
        + (f"; query's source is exact top-1 for {flat['source_is_top1']:.1%}" if "source_is_top1" in flat else ""),
    ]
    if "numpy_check_queries" in flat:
        lines.append(
            f"flat vs numpy brute force ({flat['numpy_check_queries']} queries): recall {flat['numpy_check_recall']:.4f}, "
            f"max score diff {flat['numpy_check_max_score_diff']:.1e}"
        )
    for r in report["rows"]:
        if "cpu_over_gpu_time" in r:
            lines.append(
                f"GPU flat vs CPU flat: id recall {r['recall_at_k']:.4f}, identical rows {r['ids_equal_rows']:.2%}, "
                f"max score diff {r['max_score_diff_vs_cpu']:.1e}, CPU/GPU search time {r['cpu_over_gpu_time']:.1f}x"
            )
    lines.append("")
    lines.append("memory bound (stated before building):")
    lines += [f"  {name:<44}{v / 1e6:>10,.0f} MB" for name, v in b.items()]
    peak, bound = report["process_peak_bytes"], report["bound_checked"]
    if bound != b["total"]:
        lines.append(f"  {'checked instead (--bound-gb)':<44}{bound / 1e6:>10,.0f} MB")
    lines.append(
        f"process peak RSS {peak / 1e6:,.0f} MB = {peak / bound:.0%} of the bound: "
        + ("HELD" if report["memory_ok"] else "EXCEEDED")
    )
    if not report["peak_reset_per_kind"]:
        lines.append("  (peak RSS could not be reset per kind: each row shows the process peak so far)")
    return "\n".join(lines)


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split(","))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Config()
    ap.add_argument("--n", type=int, default=d.n)
    ap.add_argument("--dim", type=int, default=d.dim)
    ap.add_argument("--nq", type=int, default=d.nq)
    ap.add_argument("--k", type=int, default=d.k)
    ap.add_argument("--corpus", choices=("clustered", "uniform"), default=d.corpus)
    ap.add_argument("--clusters", type=int, default=d.clusters)
    ap.add_argument("--spread", type=float, default=d.spread, help="cluster noise norm (clustered corpus)")
    ap.add_argument("--queries", choices=("near", "random"), default=d.queries)
    ap.add_argument("--noise", type=float, default=d.noise, help="query noise norm (near queries)")
    ap.add_argument("--kinds", default=",".join(d.kinds), help="flat is always run (the reference)")
    ap.add_argument("--nlist", type=int, default=d.nlist, help="0: power of two nearest 4 sqrt(n)")
    ap.add_argument("--nprobes", type=_ints, default=d.nprobes)
    ap.add_argument("--hnsw-m", type=int, default=d.hnsw_m)
    ap.add_argument("--ef-construction", type=int, default=d.ef_construction)
    ap.add_argument("--ef-searches", type=_ints, default=d.ef_searches)
    ap.add_argument("--pq-bytes", type=int, default=d.pq_bytes)
    ap.add_argument("--pq-nprobe", type=int, default=d.pq_nprobe)
    ap.add_argument("--train-size", type=int, default=d.train_size, help="0: min(n, 39 nlist)")
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--check-queries", type=int, default=d.check_queries)
    ap.add_argument("--gpu", action="store_true", help="also flat on the GPU, against the CPU flat search")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--bound-gb", type=float, default=0.0, help="check against this bound instead of the stated one")
    ap.add_argument("--json", default="", help="write the full report here")
    ap.add_argument("--render", default="", help="print the tables of a report written by --json; run nothing")
    a = ap.parse_args(argv)
    if a.render:
        report = json.loads(Path(a.render).read_text())
        print(markdown(report) + "\n\n" + summary(report))
        return 0 if report["memory_ok"] else 1
    kinds = tuple(kd.strip() for kd in a.kinds.split(",") if kd.strip())
    unknown = set(kinds) - {"flat", "hnsw", "ivf_flat", "ivf_pq"}
    if unknown:
        ap.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    cfg = Config(
        n=a.n, dim=a.dim, nq=a.nq, k=a.k, corpus=a.corpus, clusters=a.clusters, spread=a.spread,
        queries=a.queries, noise=a.noise, kinds=kinds, nlist=a.nlist, nprobes=a.nprobes,
        hnsw_m=a.hnsw_m, ef_construction=a.ef_construction, ef_searches=a.ef_searches,
        pq_bytes=a.pq_bytes, pq_nprobe=a.pq_nprobe, train_size=a.train_size, threads=a.threads,
        batch_size=a.batch_size, check_queries=a.check_queries, gpu=a.gpu, seed=a.seed,
    )
    if "ivf_pq" in kinds and cfg.dim % cfg.pq_bytes:
        ap.error(f"--pq-bytes {cfg.pq_bytes} must divide --dim {cfg.dim}")
    report = run_benchmark(cfg)
    if a.bound_gb:
        report["bound_checked"] = int(a.bound_gb * 1e9)
        report["memory_ok"] = memory_ok(report["process_peak_bytes"], report["bound_checked"])
    print(markdown(report))
    print()
    print(summary(report))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
        _log(f"wrote {a.json}")
    if not report["memory_ok"]:
        _log("peak RSS exceeded the stated bound")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
