"""A mining job on disk: sharded, resumable, written atomically, with a summary.

``OUT`` is never written until the whole job is done. Meanwhile ``OUT.parts/`` holds

* ``job.json``: a fingerprint of the input, the model, the options and the layout; a
  ``.parts`` folder left by a job with different settings is discarded, not mixed in;
* ``shard-00000.jsonl`` + ``shard-00000.stats.json``: each shard of anchors, committed
  atomically (rows first, then stats with the rows' SHA-256: a shard counts as done when
  both exist and the rows match their checksum; a damaged one is mined again).

A killed job started again with the same settings reuses the embedding cache (its
shards) and every finished mining shard, and produces the same ``OUT`` as an
uninterrupted run. At the end, ``OUT``, ``OUT.summary.json``, ``OUT.top-negatives.tsv``
and ``OUT.scores.png`` are written atomically and ``OUT.parts/`` is removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from contrastlib.index import IndexSpec, l2_normalise
from contrastlib.index.build import index_from_cache
from contrastlib.index.cache import EmbeddingCache, model_fingerprint
from contrastlib.mining.inputs import MiningInput
from contrastlib.mining.miner import (
    FILTERS,
    MineOptions,
    PairResult,
    ShardStats,
    VectorRows,
    excluded_sets,
    mine_shard,
)
from contrastlib.mining.output import (
    FORMATS,
    check_output_path,
    read_jsonl_lines,
    rows_for,
    write_jsonl_lines,
    write_rows,
)
from contrastlib.utils.io import (
    atomic_path,
    release_freed_memory,
    save_figure,
    sha256_file,
    write_json,
)

#: Highest-scoring kept negatives listed for a person to look at.
TOP_NEGATIVES = 20


@dataclass
class MineSettings:
    """Everything about the job besides its input and model."""

    options: MineOptions = field(default_factory=MineOptions)
    output_format: str = "triplet"
    output_scores: bool = False
    index: IndexSpec = field(default_factory=IndexSpec)
    shard_size: int = 1000
    #: Texts per embedding-cache shard: what a killed run keeps, and what ``--devices``
    #: deals out to its processes.
    embed_shard_size: int = 2048
    batch_size: int = 128
    precision: str = "fp32"
    #: Round each encode batch's width up to a multiple of this many tokens (None: exact).
    pad_to_multiple_of: int | None = None
    #: Tokens per encode forward pass (None: the encoder's default, 4,096 on CPU and no cap
    #: elsewhere; 0: no cap). See ``TextEncoder.encode``.
    token_budget: int | None = None
    query_prompt: str = ""
    corpus_prompt: str = ""
    cross_encoder: str | None = None

    def __post_init__(self) -> None:
        if self.output_format not in FORMATS:
            raise ValueError(f"unknown output format {self.output_format!r}; valid: {', '.join(FORMATS)}")
        if self.shard_size < 1 or self.embed_shard_size < 1:
            raise ValueError(f"shard sizes must be >= 1, got {self.shard_size} and {self.embed_shard_size}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")
        if self.token_budget is not None and self.token_budget < 0:
            raise ValueError(f"token_budget must be >= 0 (0: no cap), got {self.token_budget}")


@dataclass
class MineReport:
    out: Path
    rows: int
    stats: ShardStats
    shards: int
    shards_reused: int
    embed_shards_reused: int
    range_max: int
    top_negatives: list[dict[str, Any]]
    files: dict[str, str | None]
    #: What ``OUT.summary.json`` holds (:func:`summary_dict`).
    summary: dict[str, Any] = field(default_factory=dict)
    #: What searched: ``faiss-cpu``, ``faiss-gpu`` or ``torch-DEVICE-DTYPE``.
    index_backend: str = ""



#: Key in a shard's stats file: the SHA-256 of its rows file.
ROWS_SHA256 = "rows_sha256"


def _committed_stats(rows_path: Path, stats_path: Path) -> dict[str, Any] | None:
    """A finished shard's stats, or None when it is missing, unreadable or damaged."""
    try:
        stats = json.loads(stats_path.read_text())
        if stats.pop(ROWS_SHA256) != sha256_file(rows_path):
            return None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    return stats if isinstance(stats, dict) else None


def _anchor_shards(n_anchors: int, size: int) -> list[list[int]]:
    return [list(range(s, min(s + size, n_anchors))) for s in range(0, n_anchors, size)]


def _cross_encoder_scorer(path: str, anchors: list[str], corpus: Sequence[str], batch_size: int) -> Callable[..., list[float]]:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(path, trust_remote_code=False)

    def rescore(pairs: list[tuple[int, int]]) -> list[float]:
        texts = [(anchors[a], corpus[j]) for a, j in pairs]
        out = model.predict(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
        return [float(x) for x in np.asarray(out).reshape(-1)]

    return rescore


def run_mining(
    encoder: Any,
    data: MiningInput,
    out: str | Path,
    settings: MineSettings,
    *,
    cache_dir: str | Path,
    show_progress_bar: bool = True,
    plot: bool = True,
    log: Callable[[str], None] = lambda _m: None,
    pool: Callable[[Any], None] | None = None,
) -> MineReport:
    """Mine ``data`` into ``out`` (see docs/mining.md). ``plot=False`` skips the score
    histogram (``OUT.scores.png``): drawing it is most of a warm run's time. ``pool``: encodes
    the cache's missing shards on other processes first (contrastlib/pool.py)."""
    out = check_output_path(out)
    s, o = settings, settings.options
    parts = out.with_name(out.name + ".parts")
    model_fp = model_fingerprint(encoder)
    cache = EmbeddingCache(cache_dir, shard_size=s.embed_shard_size)
    cache.pool = pool
    kw: dict[str, Any] = {"batch_size": s.batch_size, "precision": s.precision, "show_progress_bar": show_progress_bar, "model_fp": model_fp}
    encode_kwargs = {"pad_to_multiple_of": s.pad_to_multiple_of, "token_budget": s.token_budget}
    if any(v is not None for v in encode_kwargs.values()):  # part of the cache key
        kw["encode_kwargs"] = {k: v for k, v in encode_kwargs.items() if v is not None}
    corpus = cache.ensure(encoder, data.corpus_texts, prompt=s.corpus_prompt, desc="embed corpus", **kw)
    reused = cache.last_stats.get("reused", 0)
    anchor_emb = l2_normalise(cache.embed(encoder, data.anchors, prompt=s.query_prompt, desc="embed anchors", **kw))
    reused += cache.last_stats.get("reused", 0)
    positives = data.positives_by_anchor()
    # (before the index is built, so that its passing arrays never sit beside the index)
    excluded = excluded_sets(data.anchors, positives, data.corpus_ids, data.corpus_texts)
    release_freed_memory()  # (the passing arrays of the steps above stay out of the index's peak)
    index = index_from_cache(corpus, s.index)  # (a shard at a time, into storage sized once)
    corpus_emb = VectorRows(len(corpus), index.vectors if index.exact else lambda rows: l2_normalise(corpus.take(rows)))

    # Shards left by a killed job are reused only if everything they came from is the
    # same: the input, the model, the settings, the very embeddings (a cleared cache, or
    # a GPU that encodes differently, gives other bytes: the shards' checksums) and where
    # the index ran.
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"input": data.fingerprint(), "model": model_fp, "settings": asdict(s), "v": 3,
                         "searched_by": index.backend, "corpus_shards": corpus.checksums}, sort_keys=True,
                        default=str).encode())
    h.update(anchor_emb.tobytes())
    job_key = h.hexdigest()
    job_file = parts / "job.json"
    if parts.exists():
        try:
            stored = json.loads(job_file.read_text()).get("key")
        except (OSError, ValueError, AttributeError):
            stored = None
        if stored != job_key:
            log(f"{parts}: left by a job with other inputs or settings; starting over")
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    write_json(job_file, {"key": job_key, "source": data.source, "out": str(out)})

    max_positives = max(len(p) for p in positives)
    range_max = o.window(max_positives)
    rescore = _cross_encoder_scorer(s.cross_encoder, data.anchors, data.corpus_texts, s.batch_size) if s.cross_encoder else None

    pairs_by_anchor: dict[int, list[tuple[int, tuple[int, int]]]] = {}
    for i, pair in enumerate(data.pairs):
        pairs_by_anchor.setdefault(pair[0], []).append((i, pair))
    shards = _anchor_shards(len(data.anchors), s.shard_size)
    total = ShardStats()
    done = 0
    bar = tqdm(total=len(data.anchors), desc="mine", unit="anchor", disable=not show_progress_bar)
    for n, anchors in enumerate(shards):
        rows_path, stats_path = parts / f"shard-{n:05d}.jsonl", parts / f"shard-{n:05d}.stats.json"
        committed = _committed_stats(rows_path, stats_path)
        if committed is not None:
            total.add(ShardStats.from_dict(committed))
            done += 1
            bar.update(len(anchors))
            continue
        shard_pairs = [p for a in anchors for p in pairs_by_anchor.get(a, [])]
        results, stats = mine_shard(
            anchors, shard_pairs, anchor_emb[anchors], corpus_emb, index.search, excluded, o,
            range_max=range_max, max_positives=max_positives, rescore=rescore,
        )
        results.sort(key=lambda r: r.pair)
        write_jsonl_lines(rows_path, (vars(r) for r in results))  # flat fields: no deep copy
        write_json(stats_path, {**stats.as_dict(), ROWS_SHA256: sha256_file(rows_path)})
        total.add(stats)
        bar.update(len(anchors))
    bar.close()

    summary_path = out.with_name(out.name + ".summary.json")
    top_path = out.with_name(out.name + ".top-negatives.tsv")
    plot_path = out.with_name(out.name + ".scores.png")
    report_files = {"out": str(out), "summary": str(summary_path), "top_negatives": str(top_path),
                    "plot": str(plot_path) if plot else None}
    # one pass over the committed shards: the output rows, and the top negatives on the way
    top = _TopNegatives(data)

    def output_rows() -> Iterator[dict[str, Any]]:
        for n in range(len(shards)):
            for rec in read_jsonl_lines(parts / f"shard-{n:05d}.jsonl"):
                result = PairResult(**rec)
                top.add(result)
                yield from rows_for(
                    result, data.anchors, data.corpus_texts, s.output_format, o.num_negatives, s.output_scores
                )

    n_rows = write_rows(out, output_rows())
    report = MineReport(out, n_rows, total, len(shards), done, reused, range_max, top.rows(), report_files,
                        index_backend=index.backend)
    _write_top_negatives(top_path, report.top_negatives)
    if plot:
        _plot_scores(plot_path, total)
    else:  # a plot left by an earlier run on this output would not match this one
        plot_path.unlink(missing_ok=True)
    report.summary = summary_dict(report, data, s)
    write_json(summary_path, report.summary)
    shutil.rmtree(parts)
    return report


class _TopNegatives:
    """The highest-scoring kept negatives (each (anchor, negative) once): the likeliest
    false negatives, for a person to look at."""

    def __init__(self, data: MiningInput) -> None:
        self.data = data
        self.best: dict[tuple[int, int], dict[str, Any]] = {}

    def add(self, r: PairResult) -> None:
        for j, sc in zip(r.negatives, r.scores, strict=True):
            if (r.anchor, j) not in self.best:
                self.best[(r.anchor, j)] = {
                    "score": sc, "positive_score": r.positive_score, "anchor": self.data.anchors[r.anchor],
                    "positive": self.data.corpus_texts[r.positive], "negative": self.data.corpus_texts[j],
                }
        if len(self.best) > 50 * TOP_NEGATIVES:  # keep memory bounded
            self.best = dict(sorted(self.best.items(), key=lambda kv: -kv[1]["score"])[:TOP_NEGATIVES])

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self.best.values(), key=lambda r: -r["score"])[:TOP_NEGATIVES]


def _write_top_negatives(path: Path, rows: list[dict[str, Any]]) -> None:
    def clean(t: str) -> str:
        return " ".join(t.split())

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("score\tpositive_score\tanchor\tnegative\tpositive\n")
        for r in rows:
            fh.write(
                f"{r['score']:.4f}\t{r['positive_score']:.4f}\t{clean(r['anchor'])}\t{clean(r['negative'])}\t{clean(r['positive'])}\n"
            )


def _plot_scores(path: Path, stats: ShardStats) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.subplots()
    groups = [
        (stats.positive_scores, "positives", "tab:green"),
        (stats.negative_scores, "negatives kept", "tab:blue"),
        (stats.false_negative_scores, "dropped by margin / near-duplicate", "tab:red"),
    ]
    values = [v for g, _, _ in groups for v in g]
    if values:
        bins: Any = np.linspace(min(values), max(values), 50) if max(values) > min(values) else 10
        for g, label, colour in groups:
            if g:
                # one filled outline per group (not a patch per bin): same picture, a
                # fraction of the drawing time
                ax.hist(g, bins=bins, alpha=0.55, label=f"{label} ({len(g)})", color=colour, density=True,
                        histtype="stepfilled")
    ax.set_xlabel("score (anchor, text)")
    ax.set_ylabel("density")
    ax.set_title("Mined scores: positives against negatives")
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


def summary_dict(report: MineReport, data: MiningInput, s: MineSettings) -> dict[str, Any]:
    st = report.stats
    return {
        #: candidates, dropped and not_sampled count (anchor, candidate) pairs, once per
        #: distinct anchor; kept, short_pairs and missing_negatives count per input pair
        "counted_per": {"anchor": ["candidates", "dropped", "not_sampled"],
                        "pair": ["negatives_kept", "short_pairs", "missing_negatives"]},
        "input": data.source,
        "anchors": st.anchors,
        "pairs": st.pairs,
        "duplicate_pairs_skipped": data.duplicate_pairs,
        "bad_rows_skipped": data.bad_rows_skipped,
        "empty_documents_left_out": data.empty_documents,
        "empty_positive_pairs_left_out": data.empty_positive_pairs,
        "index_backend": report.index_backend,
        "corpus": len(data.corpus_ids),
        "rows_written": report.rows,
        "output_format": s.output_format,
        "precision": s.precision,
        "pad_to_multiple_of": s.pad_to_multiple_of,
        "token_budget": s.token_budget,
        "range_max": report.range_max,
        "options": asdict(s.options),
        "candidates": st.candidates,
        "dropped": {k: st.dropped.get(k, 0) for k in FILTERS},
        "not_sampled": st.not_sampled,
        "negatives_kept": st.kept,
        "short_pairs": st.short_pairs,
        "missing_negatives": st.missing_negatives,
        "mean_positive_score": float(np.mean(st.positive_scores)) if st.positive_scores else None,
        "mean_negative_score": float(np.mean(st.negative_scores)) if st.negative_scores else None,
        "shards": report.shards,
        "shards_reused": report.shards_reused,
        "embedding_shards_reused": report.embed_shards_reused,
        "top_negatives": report.top_negatives,
        "files": report.files,
    }
