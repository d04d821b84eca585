"""Retrieval evaluation on any BEIR-layout directory, as MTEB scores it.

Documents and queries are encoded, documents go into a FAISS index (the index layer:
exact inner product by default), and each query's top ``top_k`` documents are found by a
batched search that keeps only a running top-k, never a query x corpus matrix. Scores are
cosine similarities (embeddings L2-normalised) unless ``similarity="dot"``.

Metrics follow trec_eval, which MTEB runs through pytrec_eval (checked against
pytrec_eval in the tests, ties included):

* ranking: score descending; equal scores in *descending* document-id order (trec_eval's
  rule), so a tie does not depend on the index or the encoding order;
* a document is relevant when its grade is above 0; nDCG uses the grades as linear gains
  and the ideal ranking of every judged document;
* ``map@k`` is trec_eval's ``map_cut``: precision at each relevant document retrieved
  within k, divided by the number of relevant documents (not by ``min(k, R)`` as
  sentence-transformers' evaluator does);
* ``mrr@k`` is the reciprocal rank of the first relevant document within k (0 if none);
* ``accuracy@k`` (sentence-transformers' name; MTEB's ``hit rate``): 1 if any relevant
  document is within k; ``precision@k`` divides by k; ``recall@k`` by the number of
  relevant documents.

All are averaged over the queries that have a relevant document, x100 in the reports.
A query whose id is also a document id is not matched to that document when
``ignore_identical_ids`` is set (BEIR's default; MTEB's default is off, and SciFact's ids
never collide).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from contrastlib.data.beir import BeirData, read_beir, read_beir_streamed, split_spec
from contrastlib.data.prompts import with_prompt
from contrastlib.encoders.base import Encoder
from contrastlib.evaluation.base import Evaluation
from contrastlib.registry import EVALUATIONS
from contrastlib.utils.io import atomic_path

if TYPE_CHECKING:
    from contrastlib.index.cache import CachedEmbeddings

#: k values reported per metric (sentence-transformers' names; recall also at 100).
DEFAULT_KS: dict[str, tuple[int, ...]] = {
    "ndcg": (1, 3, 5, 10),
    "mrr": (1, 3, 5, 10),
    "map": (100,),
    "accuracy": (1, 3, 5, 10),
    "precision": (1, 3, 5, 10),
    "recall": (1, 3, 5, 10, 100),
}

Ranking = Sequence[tuple[str, float]]


def trec_order(hits: Ranking) -> list[tuple[str, float]]:
    """Sort ``(doc id, score)`` as trec_eval does: score descending, then doc id descending."""
    return sorted(hits, key=lambda h: (h[1], h[0]), reverse=True)


def query_metrics(
    hits: Ranking, grades: Mapping[str, int], ks: Mapping[str, Sequence[int]] = DEFAULT_KS
) -> dict[str, float]:
    """Every metric for one query: ``hits`` in any order, ``grades`` its qrels."""
    ranked = [doc for doc, _ in trec_order(hits)]
    relevant = {d for d, g in grades.items() if g > 0}
    n_rel = len(relevant)
    rel_flags = [doc in relevant for doc in ranked]
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)
    out: dict[str, float] = {}
    for k in ks.get("ndcg", ()):
        dcg = sum(grades.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if grades.get(doc, 0) > 0)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
    for k in ks.get("mrr", ()):
        first = next((i for i, r in enumerate(rel_flags[:k]) if r), None)
        out[f"mrr@{k}"] = 0.0 if first is None else 1.0 / (first + 1)
    for k in ks.get("map", ()):
        found, total = 0, 0.0
        for i, r in enumerate(rel_flags[:k]):
            if r:
                found += 1
                total += found / (i + 1)
        out[f"map@{k}"] = total / n_rel if n_rel else 0.0
    for k in ks.get("accuracy", ()):
        out[f"accuracy@{k}"] = float(any(rel_flags[:k]))
    for k in ks.get("precision", ()):
        out[f"precision@{k}"] = sum(rel_flags[:k]) / k
    for k in ks.get("recall", ()):
        out[f"recall@{k}"] = sum(rel_flags[:k]) / n_rel if n_rel else 0.0
    return out


def mean_metrics(
    run: Mapping[str, Ranking], qrels: Mapping[str, Mapping[str, int]], ks: Mapping[str, Sequence[int]] = DEFAULT_KS
) -> dict[str, float]:
    """Metrics averaged over the queries of ``qrels`` that have a relevant document (a
    query missing from ``run`` retrieved nothing and scores 0)."""
    per_query = [
        query_metrics(run.get(q, ()), grades, ks) for q, grades in qrels.items() if any(g > 0 for g in grades.values())
    ]
    if not per_query:
        raise ValueError("no query with a relevant document")
    return {name: float(np.mean([m[name] for m in per_query])) for name in per_query[0]}


@dataclass(frozen=True)
class RetrievalResult:
    #: metric name (``ndcg@10``, ...) -> value in [0, 1].
    metrics: dict[str, float]
    n_queries: int
    n_documents: int
    run: dict[str, list[tuple[str, float]]] = field(default_factory=dict, repr=False)
    #: Prefix size -> nDCG@10 of the embeddings cut to it (a Matryoshka model's sizes).
    by_dim: dict[int, float] = field(default_factory=dict)
    #: What searched (``faiss-cpu``, ``faiss-gpu``, ``torch-DEVICE-DTYPE``).
    index_backend: str = ""

    def x100(self) -> dict[str, float]:
        """Metrics x 100, with each size's nDCG@10 as ``ndcg@10[SIZE]``."""
        return {**{k: 100 * v for k, v in self.metrics.items()},
                **{f"ndcg@10[{d}]": 100 * v for d, v in self.by_dim.items()}}


def unwritable_trec_id(ids: Iterable[str]) -> str | None:
    """The first id a TREC run cannot hold (empty, or holding whitespace), or None."""
    return next((i for i in ids if not i or any(c.isspace() for c in i)), None)


def write_trec_run(path: str | Path, run: Mapping[str, Ranking], name: str = "contrastlib") -> Path:
    """A TREC run file (``qid Q0 docid rank score name``), written atomically. Scores are
    written in full (``repr``): trec_eval re-sorts by score, and rounding would turn near
    ties into ties that it breaks by id, changing the metrics."""
    path = Path(path)
    bad = unwritable_trec_id(i for qid, hits in run.items() for i in (qid, *(d for d, _ in hits)))
    if bad is not None:
        raise ValueError(f"id {bad!r} is empty or holds whitespace: not writable as a TREC run")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for qid, hits in run.items():
            for rank, (doc, score) in enumerate(trec_order(hits), start=1):
                fh.write(f"{qid} Q0 {doc} {rank} {score!r} {name}\n")
    return path



def with_prompts(data: BeirData, query_prompt: str | None, document_prompt: str | None) -> BeirData:
    """``data`` with each prompt put before its queries' / documents' texts."""
    return dataclasses.replace(data, query_texts=with_prompt(data.query_texts, query_prompt),
                               corpus_texts=with_prompt(data.corpus_texts, document_prompt))


def evaluate_retrieval(
    encoder: Any,
    data: BeirData,
    *,
    top_k: int = 100,
    similarity: str = "cosine",
    ignore_identical_ids: bool = False,
    index_spec: Any = None,
    embed: Any = None,
    cached: Callable[[Sequence[str], str], CachedEmbeddings] | None = None,
    ks: Mapping[str, Sequence[int]] = DEFAULT_KS,
    dims: Sequence[int] = (),
    **encode_kwargs: Any,
) -> RetrievalResult:
    """Encode ``data``'s corpus and queries with ``encoder``, search, score.

    ``encoder`` is anything with ``encode(texts, **encode_kwargs)`` (a TextEncoder, a
    SentenceTransformer). ``embed(texts, kind)``, when given, replaces ``encoder.encode``
    (the embedding cache passes itself here). ``index_spec`` picks the FAISS index
    (:class:`~contrastlib.index.IndexSpec`; default exact). ``dims``: prefix sizes scored
    as well, from the same embeddings cut and renormalised (``by_dim``: each size's nDCG@10,
    as a Matryoshka model is used at that size). ``cached(texts, kind)``, when given (the
    embedding cache's ``ensure``), is the bounded-memory path: each index is built from the
    cache a shard at a time (contrastlib/index/build.py), one size after another, and the
    corpus's matrix is never held whole.
    """
    from contrastlib.index import IndexSpec, VectorIndex, l2_normalise

    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    needed = max(top_k, *(k for v in ks.values() for k in v))

    def encode(texts: Sequence[str], kind: str) -> np.ndarray:
        out = embed(texts, kind) if embed is not None else encoder.encode(list(texts), **encode_kwargs)
        x = np.asarray(out, dtype=np.float32)
        return l2_normalise(x) if similarity == "cosine" else x

    def index_of(docs: np.ndarray, spec: Any) -> Any:
        index = VectorIndex(docs.shape[1], spec)
        index.train(docs)
        index.add(docs)
        return index

    def ranked(index: Any, queries: np.ndarray) -> dict[str, list[tuple[str, float]]]:
        # one more hit per query when a document may be dropped for sharing the query's id
        scores, ids = index.search(queries, min(needed + int(ignore_identical_ids), index.ntotal))
        run: dict[str, list[tuple[str, float]]] = {}
        for qi, qid in enumerate(data.query_ids):
            hits = [
                (data.corpus_ids[j], float(s))
                for s, j in zip(scores[qi], ids[qi], strict=True)
                if j >= 0 and not (ignore_identical_ids and data.corpus_ids[j] == qid)
            ]
            run[qid] = trec_order(hits)[:needed]
        return run

    spec = index_spec or IndexSpec()
    exact = dataclasses.replace(spec, kind="flat")  # each Matryoshka size: any size fits; same device
    by_dim: dict[int, float] = {}

    def size_ndcg(index: Any, queries: np.ndarray, d: int) -> None:
        by_dim[d] = mean_metrics(ranked(index, l2_normalise(queries[:, :d].copy())), data.qrels,
                                 {"ndcg": (10,)})["ndcg@10"]

    if cached is not None:  # the bounded path: each index built from the cache, one after another
        from contrastlib.index.build import index_from_cache

        def prepare(x: np.ndarray) -> np.ndarray:
            return l2_normalise(x) if similarity == "cosine" else x

        entry = cached(data.corpus_texts, "corpus")
        queries = prepare(cached(data.query_texts, "queries").matrix())
        index = index_from_cache(entry, spec, prepare)
        backend = index.backend
        run = ranked(index, queries)
        del index
        for d in (int(d) for d in dims if d < entry.dim):
            def cut(x: np.ndarray, d: int = d) -> np.ndarray:
                return l2_normalise(prepare(x)[:, :d].copy())

            size_ndcg(index_from_cache(entry, exact, cut), queries, d)
    else:
        docs = encode(data.corpus_texts, "corpus")
        # each Matryoshka size's documents, cut and renormalised; the full embeddings go
        # once they are indexed
        cut_docs = {int(d): l2_normalise(docs[:, :d].copy()) for d in dims if d < docs.shape[1]}
        index = index_of(docs, spec)
        backend = index.backend
        del docs
        queries = encode(data.query_texts, "queries")
        run = ranked(index, queries)
        del index
        for d in list(cut_docs):
            size_ndcg(index_of(cut_docs.pop(d), exact), queries, d)
    metrics = mean_metrics(run, data.qrels, ks)
    kept = {q: hits[:top_k] for q, hits in run.items()}  # what a run file holds
    return RetrievalResult(metrics, len(data.query_ids), len(data.corpus_ids), kept, by_dim, backend)


@EVALUATIONS.register("retrieval", summary="nDCG/MRR/MAP/Recall@k on a BEIR-layout directory, as MTEB scores it")
@dataclass
class RetrievalEvaluator(Evaluation):
    """``eval.retrieval``: one BEIR-layout directory (``DIR`` or ``DIR:split``), read
    when built, before any model loads."""

    takes: ClassVar[str] = "strings"
    main_metric: ClassVar[str] = "ndcg@10"
    uses_devices: ClassVar[bool] = True
    name: str
    data: BeirData
    batch_size: int = 128
    precision: str = "fp32"

    @classmethod
    def from_entry(cls, entry: Any, *, batch_size: int, precision: str) -> RetrievalEvaluator:
        root, split = split_spec(str(entry))
        return cls(str(entry), read_beir(root, split), batch_size=batch_size, precision=precision)

    cli_help: ClassVar[str | None] = "nDCG/MRR/MAP/accuracy/precision/recall@k on a BEIR-layout directory, as MTEB scores it"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        from contrastlib.index.options import add_index_arguments

        p.add_argument("--model", "-m", required=True, help="HF id, model dir, sentence-transformers dir, run dir or .ckpt")
        p.add_argument("--data", "-d", required=True, help="BEIR-layout dir: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
        p.add_argument("--split", default=None, help="qrels split (default: test; DIR:split also works)")
        p.add_argument("--top-k", type=int, default=100,
                       help="documents per query in the run file (default 100; the metrics always see the top 100)")
        add_index_arguments(p)
        p.add_argument("--ignore-identical-ids", action="store_true",
                       help="never match a query to the document with its own id (BEIR's default; MTEB's is off)")
        p.add_argument("--run-file", help="also write a TREC run file here")
        p.add_argument("--cache-dir", help="embedding cache directory (reused by later runs)")
        p.add_argument("--embed-shard-size", type=int, default=2048,
                       help="texts per embedding-cache shard (what a killed run keeps; what --devices deals out)")
        p.add_argument("--devices", help="encode on several processes: a count or a list (cpu,cpu / cuda:0,cuda:1), "
                                         "through the embedding cache (--cache-dir, else the default one)")
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
        p.add_argument("--query-prompt", help="text put before every query (e.g. 'query: ')")
        p.add_argument("--document-prompt", help="text put before every document (e.g. 'passage: ')")

    @classmethod
    def run_cli(cls, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
        from contrastlib.errors import ContrastlibError
        from contrastlib.index.options import check_index_dim, check_index_fits, index_spec
        from contrastlib.loading import LazyEncoder
        from contrastlib.pool import parse_devices
        from contrastlib.utils.tables import table

        root, split = split_spec(args.data) if args.split is None else (args.data, args.split)
        spec = index_spec(args)
        devices = parse_devices(args.devices)
        cached = bool(args.cache_dir or devices)  # through the embedding cache: the corpus streamed
        if cached and args.embed_shard_size < 1:
            raise ContrastlibError(f"--embed-shard-size must be >= 1, got {args.embed_shard_size}")
        beir = (read_beir_streamed(root, split, store_root=Path(args.cache_dir) / "corpora" if args.cache_dir else None,
                                   empty_last=True)
                if cached else read_beir(root, split))
        data = with_prompts(beir, args.query_prompt, args.document_prompt)  # before the model loads
        check_index_fits(spec, len(data.corpus_ids))
        if args.run_file:
            bad = unwritable_trec_id(itertools.chain(data.query_ids, data.corpus_ids))
            if bad is not None:
                raise ContrastlibError(f"--run-file: id {bad!r} holds whitespace, which a TREC run cannot hold")
        from contrastlib.pool import EncodePool

        # loaded only if an embedding is not in the cache: a warm evaluation never loads it
        encoder = LazyEncoder(args.model)
        check_index_dim(spec, encoder)
        ensure = None
        if cached:  # a pool encodes the cache's shards
            from contrastlib.index.cache import EmbeddingCache, default_cache_dir

            cache = EmbeddingCache(args.cache_dir or default_cache_dir(), shard_size=args.embed_shard_size)
            cache.pool = EncodePool(args.model, devices) if devices else None
            ensure = cache.ensurer(
                encoder, batch_size=args.batch_size, precision=args.precision, show_progress_bar=not args.no_progress
            )
        result = evaluate_retrieval(
            encoder, data, top_k=args.top_k, index_spec=spec, ignore_identical_ids=args.ignore_identical_ids,
            cached=ensure, batch_size=args.batch_size, precision=args.precision, show_progress_bar=not args.no_progress,
            dims=encoder.matryoshka_dims,
        )
        if args.run_file:
            write_trec_run(args.run_file, result.run)
        m = result.x100()
        rows = [["metric", *[f"@{k}" for k in (1, 3, 5, 10, 100)]]]
        for name in DEFAULT_KS:
            rows.append([name, *[f"{m[f'{name}@{k}']:.2f}" if f"{name}@{k}" in m else "" for k in (1, 3, 5, 10, 100)]])
        empty = f" ({data.empty_documents} empty, encoded as MTEB does)" if data.empty_documents else ""
        text = (f"retrieval  {data.name}  queries={result.n_queries}  documents={result.n_documents}{empty}  "
                f"nDCG@10={m['ndcg@10']:.2f}"
                + "".join(f"  nDCG@10[{d}]={100 * v:.2f}" for d, v in result.by_dim.items()) + "\n" + table(rows))
        if args.run_file:
            text += f"\nrun file: {args.run_file}"
        payload = {"task": "retrieval", "data": str(root), "split": split, "model": args.model,
                   "n_queries": result.n_queries, "n_documents": result.n_documents,
                   "n_empty_documents": data.empty_documents, "index_backend": result.index_backend, **m}
        return payload, text

    def __call__(self, encoder: Any, cache: dict[Any, Any] | None = None) -> dict[str, float]:
        named = encoder.prompts if isinstance(encoder, Encoder) else {}  # the prompts it trains with
        data = with_prompts(self.data, named.get("query"), named.get("document"))
        dims = encoder.matryoshka_dims if isinstance(encoder, Encoder) else ()
        if self.devices and isinstance(encoder, Encoder):
            r = self._on_devices(encoder, data, dims)
        else:
            r = evaluate_retrieval(encoder, data, batch_size=self.batch_size, precision=self.precision, dims=dims)
        return {**r.x100(), "n_queries": r.n_queries}

    def _on_devices(self, encoder: Encoder, data: BeirData, dims: Sequence[int]) -> RetrievalResult:
        """``eval.devices``: the model as it is now saved, the corpus and queries encoded by
        one process per device through a temporary embedding cache, the index built from it
        a shard at a time."""
        import tempfile

        from contrastlib.index.cache import EmbeddingCache
        from contrastlib.pool import EncodePool

        with tempfile.TemporaryDirectory(prefix="contrastlib-eval-") as tmp:
            saved = encoder.save(Path(tmp) / "model")
            cache = EmbeddingCache(Path(tmp) / "cache")
            cache.pool = EncodePool(str(saved), list(self.devices))
            ensure = cache.ensurer(encoder, batch_size=self.batch_size, precision=self.precision,
                                   show_progress_bar=False)
            return evaluate_retrieval(encoder, data, cached=ensure, dims=dims)
