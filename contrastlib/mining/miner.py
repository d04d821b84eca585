"""Hard-negative mining: encoder -> embedding cache -> FAISS index -> filters -> rows.

The semantics are sentence-transformers' ``mine_hard_negatives`` (the tool people use),
so that its options mean the same here; where we differ, it says so below.

For every distinct anchor, the corpus is searched (batched, running top-k: memory is
bounded by the batch, never a query x corpus matrix) for its best ``range_max + P``
candidates, where ``P`` is the most known positives any anchor of the job has (an
anchor with several positives must not come up short), plus room for the
anchor's own exclusions. That pool is sentence-transformers' window. Its candidates then
pass, in order, and each one dropped is counted against the first filter that dropped it:

1. ``known_positive``: its id is one of the anchor's positives, its text equals a
   positive's text, or it is the anchor's own text (by id and exact text, never by a
   similarity of 1, which dropout and near-copies break). sentence-transformers
   excludes by deduplicated text only: a document under two ids slips through there;
2. ``max_score`` / ``min_score``: a score above / below a bound;
3. ``absolute_margin``: ``score > positive_score - absolute_margin``;
4. ``relative_margin``: ``score > positive_score - |positive_score| * relative_margin``;
   the margins compare against the anchor's *lowest* positive score, as
   sentence-transformers does (the safe choice when an anchor has several positives);
5. ``near_duplicate`` (ours): its cosine similarity to one of the anchor's positives is
   at least ``near_duplicate`` (a near-copy of a positive is a false negative);
6. ``below_range_min``: the first ``range_min`` survivors are skipped (the ranks most
   likely to hold unlabelled positives).

Of the rest, ``num_negatives`` are kept: the best-scoring (``top``) or a seeded random
choice (``random``; the seed is the job's seed and the anchor's index, so a resumed or
re-sharded job draws the same, where Tevatron seeds from the clock). Every
pair of a repeated anchor gets the anchor's negatives. A pair with fewer is *short*: it is
counted exactly and never padded with random texts (FlagEmbedding pads silently).

With a ``cross_encoder``, the candidates and the positives are rescored by it, and the
score filters, the margins and the order use its scores (sentence-transformers rescores
only when a filter is set; here whenever one is given).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from contrastlib.utils.text_store import digests_of

FILTERS = (
    "known_positive",
    "max_score",
    "min_score",
    "absolute_margin",
    "relative_margin",
    "near_duplicate",
    "below_range_min",
)
SAMPLING = ("top", "random")


@dataclass(frozen=True)
class MineOptions:
    """The miner's options (sentence-transformers' ``mine_hard_negatives`` names)."""

    range_min: int = 0
    #: null: sentence-transformers' default, ``range_min + num_negatives + max positives``
    #: (``10 * num_negatives`` when a margin or score bound is set): see :meth:`window`.
    range_max: int | None = None
    num_negatives: int = 3
    sampling_strategy: str = "top"
    absolute_margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    #: Drop a candidate whose cosine similarity to the positive is at least this (null: off).
    near_duplicate: float | None = 0.98
    seed: int = 0

    def __post_init__(self) -> None:
        if self.range_min < 0:
            raise ValueError(f"range_min must be >= 0, got {self.range_min}")
        if self.range_max is not None and self.range_max <= self.range_min:
            raise ValueError(f"range_max ({self.range_max}) must be above range_min ({self.range_min})")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if self.sampling_strategy not in SAMPLING:
            raise ValueError(f"sampling_strategy must be one of {', '.join(SAMPLING)}, got {self.sampling_strategy!r}")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise ValueError(f"relative_margin must be in [0, 1), got {self.relative_margin}")
        if self.absolute_margin is not None and self.absolute_margin < 0:
            raise ValueError(f"absolute_margin must be >= 0, got {self.absolute_margin}")
        if self.near_duplicate is not None and not 0 < self.near_duplicate <= 1:
            raise ValueError(f"near_duplicate must be in (0, 1] or null (off), got {self.near_duplicate}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


    @property
    def filtering(self) -> bool:
        return any(
            v is not None for v in (self.absolute_margin, self.relative_margin, self.max_score, self.min_score)
        )

    def window(self, max_positives: int) -> int:
        """``range_max``, or its default for a job whose anchors have up to ``max_positives``."""
        if self.range_max is not None:
            return self.range_max
        return self.range_min + (10 if self.filtering else 1) * self.num_negatives + max_positives


@dataclass
class PairResult:
    """The negatives kept for one ``(anchor, positive)`` pair, best first."""

    pair: int
    anchor: int
    positive: int
    positive_score: float
    negatives: list[int]
    scores: list[float]


@dataclass
class ShardStats:
    """Counts for a shard of anchors; shards add up to the job's summary."""

    anchors: int = 0
    pairs: int = 0
    candidates: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    not_sampled: int = 0
    kept: int = 0
    short_pairs: int = 0
    missing_negatives: int = 0
    #: Score samples for the histogram: positives, kept negatives, dropped by a margin or
    #: near-duplicate filter (the likely false negatives).
    positive_scores: list[float] = field(default_factory=list)
    negative_scores: list[float] = field(default_factory=list)
    false_negative_scores: list[float] = field(default_factory=list)

    def add(self, other: ShardStats) -> None:
        for name in ("anchors", "pairs", "candidates", "not_sampled", "kept", "short_pairs", "missing_negatives"):
            vars(self)[name] += vars(other)[name]
        for k, v in other.dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + v
        self.positive_scores += other.positive_scores
        self.negative_scores += other.negative_scores
        self.false_negative_scores += other.false_negative_scores

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "dropped": dict(self.dropped)}  # flat: no deep copy of the score lists

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardStats:
        return cls(**d)


class CorpusVectors(Protocol):
    """What :func:`mine_shard` reads corpus vectors from: an ``[N, D]`` array, or
    :class:`VectorRows` (rows read from an index or a cache as asked for)."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: Any) -> np.ndarray: ...


class VectorRows:
    """``N`` normalised corpus vectors read by ``lookup(rows) -> [len(rows), D]``, indexed
    like an array (an int gives one row, a list gives rows)."""

    def __init__(self, n: int, lookup: Callable[[np.ndarray], np.ndarray]) -> None:
        self.n, self.lookup = n, lookup

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, (int, np.integer)):
            return self.lookup(np.asarray([rows], dtype=np.int64))[0]
        return self.lookup(np.asarray(rows, dtype=np.int64).reshape(-1))


def excluded_sets(
    anchors: Sequence[str], positives: Sequence[Sequence[int]], corpus_ids: Sequence[str], corpus_texts: Sequence[str]
) -> list[set[int]]:
    """Per anchor: every corpus index that is a known positive (by id or by exact text)
    or the anchor's own text. Texts are matched by their digests (a store's are on disk),
    so no text of the corpus is held in memory."""
    digests = digests_of(corpus_texts)
    order = np.argsort(digests, kind="stable")
    ordered = digests[order]

    def rows_with(d: bytes) -> list[int]:
        lo, hi = np.searchsorted(ordered, d, side="left"), np.searchsorted(ordered, d, side="right")
        return [int(r) for r in order[lo:hi]]

    anchor_digests = digests_of(anchors)
    out = []
    for a_digest, pos in zip(anchor_digests, positives, strict=True):
        ex: set[int] = set(pos)
        for p in pos:
            ex.update(rows_with(digests[p]))
        ex.update(rows_with(a_digest))
        out.append(ex)
    return out


def mine_shard(
    anchor_ids: Sequence[int],
    pairs: Sequence[tuple[int, tuple[int, int]]],
    anchor_emb: np.ndarray,
    corpus_emb: CorpusVectors,
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    excluded: Sequence[set[int]],
    options: MineOptions,
    *,
    range_max: int,
    max_positives: int = 1,
    rescore: Callable[[list[tuple[int, int]]], list[float]] | None = None,
) -> tuple[list[PairResult], ShardStats]:
    """Mine one shard of anchors.

    Args:
        anchor_ids: the shard's anchors (indices into the job's anchors).
        pairs: ``(pair index, (anchor index, positive corpus index))`` of those anchors.
        anchor_emb: ``[len(anchor_ids), D]`` normalised anchor embeddings, same order.
        corpus_emb: ``[N, D]`` normalised corpus embeddings (for positive scores and the
            near-duplicate check): an array, or rows read as needed (:class:`CorpusVectors`).
        search: ``(queries, k) -> (scores, ids)`` over the corpus, best first.
        excluded: per job anchor, the corpus indices that are known positives.
        range_max: ``options.window(P)`` for the whole job (``P``: the most positives an
            anchor of the job has).
        max_positives: ``P``.
        rescore: ``[(anchor index, corpus index)] -> scores`` (a cross-encoder), or None.
    """
    o = options
    stats = ShardStats(anchors=len(anchor_ids))
    row_of = {a: r for r, a in enumerate(anchor_ids)}
    positives: dict[int, list[int]] = {}
    for _, (a, p) in pairs:
        positives.setdefault(a, [])
        if p not in positives[a]:
            positives[a].append(p)
    # sentence-transformers' pool: range_max + P candidates, positives among them; the
    # exclusions it does not make (same text under another id, the anchor's own text)
    # get room of their own, so they never shrink the pool
    extra = max((len(excluded[a]) - len(positives.get(a, ())) for a in anchor_ids), default=0)
    k = min(range_max + max_positives + extra, len(corpus_emb))
    scores, ids = search(anchor_emb, k) if k > 0 else (np.zeros((len(anchor_ids), 0)), np.zeros((len(anchor_ids), 0), dtype=np.int64))
    window: dict[int, list[tuple[int, float]]] = {}
    for a in anchor_ids:
        r = row_of[a]
        cand = [(int(j), float(s)) for s, j in zip(scores[r], ids[r], strict=True) if j >= 0]
        own_extra = len(excluded[a]) - len(positives.get(a, ()))
        cand = cand[: range_max + max_positives + own_extra]
        rest = [(j, s) for j, s in cand if j not in excluded[a]]
        stats.candidates += len(cand)
        stats.dropped["known_positive"] += len(cand) - len(rest)
        window[a] = rest
    pos_score: dict[tuple[int, int], float] = {}
    if rescore is not None:
        todo = sorted({(a, j) for a in anchor_ids for j, _ in window[a]} | {(a, p) for _, (a, p) in pairs})
        ce = dict(zip(todo, rescore(todo), strict=True)) if todo else {}
        for a in anchor_ids:
            window[a] = sorted(((j, ce[(a, j)]) for j, _ in window[a]), key=lambda x: -x[1])
        pos_score = {(a, p): ce[(a, p)] for _, (a, p) in pairs}
    else:
        pos_score = {(a, p): float(anchor_emb[row_of[a]] @ corpus_emb[p]) for _, (a, p) in pairs}
    chosen_by_anchor: dict[int, list[tuple[int, float]]] = {}
    for a in anchor_ids:
        pos = positives.get(a, [])
        lowest = min(pos_score[(a, p)] for p in pos)
        cand_ids = [j for j, _ in window[a]]
        dup = (corpus_emb[cand_ids] @ corpus_emb[pos].T).max(axis=1) if cand_ids and o.near_duplicate is not None else None
        survivors: list[tuple[int, float]] = []
        for n, (j, s) in enumerate(window[a]):
            if o.max_score is not None and s > o.max_score:
                stats.dropped["max_score"] += 1
            elif o.min_score is not None and s < o.min_score:
                stats.dropped["min_score"] += 1
            elif o.absolute_margin is not None and s > lowest - o.absolute_margin:
                stats.dropped["absolute_margin"] += 1
                stats.false_negative_scores.append(s)
            elif o.relative_margin is not None and s > lowest - abs(lowest) * o.relative_margin:
                stats.dropped["relative_margin"] += 1
                stats.false_negative_scores.append(s)
            elif dup is not None and o.near_duplicate is not None and dup[n] >= o.near_duplicate:
                stats.dropped["near_duplicate"] += 1
                stats.false_negative_scores.append(s)
            else:
                survivors.append((j, s))
        stats.dropped["below_range_min"] += min(o.range_min, len(survivors))
        survivors = survivors[o.range_min :]
        if o.sampling_strategy == "random" and len(survivors) > o.num_negatives:
            rng = np.random.default_rng([o.seed, a])
            pick = np.sort(rng.choice(len(survivors), o.num_negatives, replace=False))
            chosen = [survivors[i] for i in pick]
        else:
            chosen = survivors[: o.num_negatives]
        stats.not_sampled += len(survivors) - len(chosen)
        chosen_by_anchor[a] = chosen
        stats.negative_scores += [s for _, s in chosen]
    results: list[PairResult] = []
    for pair_index, (a, p) in pairs:
        chosen = chosen_by_anchor[a]
        stats.pairs += 1
        stats.kept += len(chosen)
        stats.positive_scores.append(pos_score[(a, p)])
        if len(chosen) < o.num_negatives:
            stats.short_pairs += 1
            stats.missing_negatives += o.num_negatives - len(chosen)
        results.append(PairResult(pair_index, a, p, pos_score[(a, p)], [j for j, _ in chosen], [s for _, s in chosen]))
    return results, stats
