"""Re-mining during training (ANCE, Xiong et al. 2021): every N optimizer steps, re-embed
the corpus with the model being trained and mine each row's hard negatives again.

The training rows are ``(anchor, positive, negative_1, ..., negative_k)`` (as ``contrastlib
mine --output-format n-tuple`` writes them); each round replaces every row's ``k``
negatives in place, with the miner's own rules and filters (:mod:`contrastlib.mining`).
A row that comes up short keeps its previous negatives in the empty slots (counted as
``remine/short_rows``; never a random text). The corpus is every distinct positive and
negative text of the rows, plus an optional extra corpus.

Drift is logged each round (CSV and TensorBoard, like the loss):

* ``remine/overlap@k``: per anchor, the share of this round's top-k candidates (known
  positives excluded) that were also in the previous round's top-k, averaged;
* ``remine/changed``: the share of negative slots whose text changed;
* ``remine/short_rows``, ``remine/seconds`` (encoding included);
* ``remine/encoded_per_rank``: the texts rank 0 encoded (its share under DDP).

Under DDP every rank encodes its contiguous ``1/W`` share of the texts (corpus and
anchors) and the shares are joined with the strategy's ``all_gather``, so a round's
encoding takes ``1/W`` of the time it takes one process. Rank 0 then searches and filters,
and the new negatives reach every rank through the strategy's ``broadcast`` (Lightning's
collectives), so all ranks train on the same rows, even where two machines would round
an embedding differently. The rows change at once; the no-duplicates sampler sees the new
texts from the next epoch (a batch of the current epoch was formed with the old ones).
DataLoader workers hold copies of the rows, so re-mining needs ``data.num_workers: 0``
(checked before training).
"""

from __future__ import annotations

import time
from collections.abc import MutableSequence, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from contrastlib.index import IndexSpec, VectorIndex, l2_normalise
from contrastlib.mining.inputs import MiningInput
from contrastlib.mining.miner import MineOptions, excluded_sets, mine_shard
from contrastlib.samplers.base import GlobalBatchSampler


class ReMiningCallback(pl.Callback):
    """Re-mine ``rows``' negatives every ``every_n_steps`` optimizer steps.

    Args:
        rows: the training rows, mutated in place (the dataset's own list).
        every_n_steps: optimizer steps between rounds.
        options: the miner's rules (``num_negatives`` is the rows' negative count).
        extra_corpus: more texts to mine from.
        drift_k: the k of ``remine/overlap@k``.
        batch_size, precision: for encoding.
    """

    def __init__(
        self,
        rows: MutableSequence[tuple[str, ...]],
        every_n_steps: int,
        options: MineOptions | None = None,
        *,
        extra_corpus: list[str] | None = None,
        drift_k: int = 10,
        batch_size: int = 128,
        precision: str = "fp32",
        index_spec: IndexSpec | None = None,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        widths = {len(r) for r in rows}
        if len(widths) != 1 or min(widths) < 3:
            raise ValueError("re-mining needs rows (anchor, positive, negative_1..k) with the same k on every row")
        self.rows = rows
        self.k = widths.pop() - 2
        self.every = every_n_steps
        base = options or MineOptions()
        self.options = MineOptions(**{**base.__dict__, "num_negatives": self.k})
        self.drift_k = drift_k
        self.batch_size, self.precision = batch_size, precision
        self.index_spec = index_spec or IndexSpec()
        self.anchors = list(dict.fromkeys(r[0] for r in rows))
        texts = [t for r in rows for t in r[1:]] + list(extra_corpus or [])
        self.corpus = list(dict.fromkeys(texts))
        where = {t: i for i, t in enumerate(self.corpus)}
        anchor_at = {a: i for i, a in enumerate(self.anchors)}
        self.pairs = [(anchor_at[r[0]], where[r[1]]) for r in rows]  # one per row: pair index = row
        self.positives = MiningInput("training rows", self.anchors, self.pairs, self.corpus, self.corpus).positives_by_anchor()
        self.excluded = excluded_sets(self.anchors, self.positives, self.corpus, self.corpus)
        self._previous_top: list[set[int]] | None = None
        self._last_step = -1
        #: One dict per round (also logged).
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ mining
    def encode(self, encoder: Any, texts: list[str]) -> np.ndarray:
        """``[len(texts), D]`` float32 embeddings by ``encoder`` (the run's settings)."""
        if not texts:
            return np.zeros((0, int(encoder.dim)), dtype=np.float32)
        kw: dict[str, Any] = {"batch_size": self.batch_size, "show_progress_bar": False}
        if self.precision != "fp32":
            kw["precision"] = self.precision
        return np.asarray(encoder.encode(texts, **kw), dtype=np.float32)

    def embed(self, encoder: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(corpus, anchors)`` embeddings, L2-normalised, in one process."""
        emb = self.encode(encoder, self.corpus + self.anchors)
        return l2_normalise(emb[: len(self.corpus)]), l2_normalise(emb[len(self.corpus) :])

    def share(self, world: int) -> int:
        """Texts each of ``world`` ranks encodes (the last rank's share may be shorter)."""
        return -(-(len(self.corpus) + len(self.anchors)) // world)

    def embed_sharded(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`embed` with the texts split across the DDP ranks: rank ``r`` encodes the
        ``r``-th contiguous share, padded to equal length, and ``all_gather`` joins them
        in rank order. Every rank must call it (a collective); one process: :meth:`embed`."""
        world, rank = trainer.world_size, trainer.global_rank
        if world == 1:
            return self.embed(pl_module.encoder)
        texts = self.corpus + self.anchors
        share = self.share(world)
        part = self.encode(pl_module.encoder, texts[rank * share : (rank + 1) * share])
        padded = torch.zeros(share, part.shape[1], dtype=torch.float32, device=pl_module.device)
        padded[: len(part)] = torch.from_numpy(part).to(pl_module.device)
        gathered = trainer.strategy.all_gather(padded)  # [world, share, D], rank order
        emb = gathered.reshape(world * share, -1)[: len(texts)].float().cpu().numpy()
        return l2_normalise(emb[: len(self.corpus)]), l2_normalise(emb[len(self.corpus) :])

    def mine(
        self, encoder: Any, embeddings: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[list[list[str]], dict[str, float]]:
        """New negatives per row (short rows keep previous ones) and the round's drift.
        ``embeddings``: ``(corpus, anchors)`` already computed (else encoded here)."""
        docs, queries = embeddings if embeddings is not None else self.embed(encoder)
        index = VectorIndex(docs.shape[1], self.index_spec)
        index.train(docs)
        index.add(docs)
        results, stats = mine_shard(
            list(range(len(self.anchors))), list(enumerate(self.pairs)), queries, docs, index.search,
            self.excluded, self.options, range_max=self.options.window(max(len(p) for p in self.positives)),
            max_positives=max(len(p) for p in self.positives),
        )
        # drift: top-k candidates per anchor, known positives excluded
        extra = max(len(e) for e in self.excluded)
        _, ids = index.search(queries, min(self.drift_k + extra, index.ntotal))
        top = [
            set([int(j) for j in row if j >= 0 and int(j) not in self.excluded[a]][: self.drift_k])
            for a, row in enumerate(ids)
        ]
        overlap = (
            float(np.mean([len(t & p) / max(len(p), 1) for t, p in zip(top, self._previous_top, strict=True)]))
            if self._previous_top is not None
            else float("nan")
        )
        self._previous_top = top
        new_rows: list[list[str]] = []
        changed = short = 0
        for r in sorted(results, key=lambda r: r.pair):
            old = list(self.rows[r.pair][2:])
            negs = [self.corpus[j] for j in r.negatives]
            if len(negs) < self.k:  # the empty slots keep their previous negatives
                short += 1
                negs += old[len(negs) :]
            changed += sum(1 for o, n in zip(old, negs, strict=True) if o != n)
            new_rows.append(negs)
        drift = {
            f"remine/overlap@{self.drift_k}": overlap,
            "remine/changed": changed / max(1, self.k * len(self.rows)),
            "remine/short_rows": float(short),
            "remine/kept": float(stats.kept),
        }
        return new_rows, drift

    def apply(self, negatives: list[list[str]]) -> None:
        for i, negs in enumerate(negatives):
            row = self.rows[i]
            self.rows[i] = (row[0], row[1], *negs)

    # ------------------------------------------------------------------ Lightning
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every or step == self._last_step:
            return
        self._last_step = step
        start = time.perf_counter()
        embeddings = self.embed_sharded(trainer, pl_module)
        mined: Any = self.mine(pl_module.encoder, embeddings) if trainer.is_global_zero else None
        negatives, drift = trainer.strategy.broadcast(mined, src=0)
        drift["remine/seconds"] = time.perf_counter() - start  # encoding included
        drift["remine/encoded_per_rank"] = float(self.share(trainer.world_size))  # rank 0's
        self.apply(negatives)
        drift["remine/round"] = float(len(self.history) + 1)
        self.history.append(drift)
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics({k: v for k, v in drift.items() if v == v}, step=step)
        for sampler in _samplers(trainer):
            sampler.refresh()

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [list(r) for r in self.rows], "history": self.history, "last_step": self._last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.apply([r[2:] for r in state["rows"]])
        self.history = list(state.get("history", []))
        self._last_step = int(state.get("last_step", -1))


def check_remining(cfg: Any, rows: Sequence[tuple[str, ...]], num_workers: int,
                   prompts: Sequence[str] = ()) -> MineOptions:
    """The rules of a ``remine`` config section, checked against the data before any work."""
    from contrastlib.errors import ConfigError

    if not isinstance(rows, list):
        raise ConfigError("remine.every_n_steps: re-mining rewrites the rows in memory; a Parquet or Arrow "
                          "source is memory-mapped (train on a .tsv/.jsonl file, or mine first with contrastlib mine)")
    if any(prompts):
        raise ConfigError("remine.every_n_steps: re-mining embeds the raw texts; it does not take data.prompts yet")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or min(widths) < 3:
        raise ConfigError(
            "remine.every_n_steps: re-mining needs training rows (anchor, positive, negative_1..k) with the same k "
            "(e.g. contrastlib mine --output-format n-tuple)"
        )
    if num_workers:
        raise ConfigError("remine.every_n_steps: re-mining changes the rows in place; set data.num_workers: 0")
    if cfg.every_n_steps < 1:
        raise ConfigError(f"remine.every_n_steps: must be >= 1, got {cfg.every_n_steps}")
    try:
        return MineOptions(
            range_min=cfg.range_min, range_max=cfg.range_max, num_negatives=min(widths) - 2,
            sampling_strategy=cfg.sampling_strategy, absolute_margin=cfg.absolute_margin,
            relative_margin=cfg.relative_margin, max_score=cfg.max_score, min_score=cfg.min_score,
            near_duplicate=cfg.near_duplicate if cfg.near_duplicate and cfg.near_duplicate > 0 else None,
        )
    except ValueError as exc:
        raise ConfigError(f"remine: {exc}") from None


def _samplers(trainer: pl.Trainer) -> list[Any]:
    loader = trainer.train_dataloader
    sampler = loader.batch_sampler if isinstance(loader, DataLoader) else None
    return [sampler] if isinstance(sampler, GlobalBatchSampler) else []
