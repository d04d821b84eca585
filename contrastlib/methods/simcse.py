"""SimCSE (Gao, Yao and Chen 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings").

* unsupervised: every sentence is encoded twice in one forward pass; dropout makes the two
  views differ; the other sentences of the batch are the negatives.
* supervised: (anchor, positive[, hard negative]) rows, e.g. NLI entailment and
  contradiction; every other row's positive and negative are negatives too (this is
  sentence-transformers' MultipleNegativesRankingLoss on the same data).
* scored: ``sentence1 sentence2 score`` rows (STS-style graded pairs); the loss receives
  each pair's ``scores`` and must take them (``cosent``: sentence-transformers'
  CoSENTLoss).

Config section ``method``: ``name: simcse``, ``mode: supervised | unsupervised | scored``.
Training data: ``.txt`` (one sentence per line; unsupervised) or ``.tsv``/``.csv``/
``.jsonl`` pairs or triplets (``anchor positive [negative]``, see
:func:`contrastlib.data.read_tuples`), or the same columns in a Parquet file or an Arrow
folder (memory-mapped; :mod:`contrastlib.data.tables`); ``data.columns`` picks them by name. Any registered loss works (it receives
``anchors [B, D]`` and ``candidates [C, D]``), and so does gradient caching.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastlib.data.collate import HFTokenize, IndexedRows, TextBatch, TextTupleCollator
from contrastlib.data.prompts import column_prompts, named_prompts
from contrastlib.data.readers import BadRows, read_scored_pairs, read_scored_table, read_tuples
from contrastlib.data.tables import TextTable, column, first_columns, is_table
from contrastlib.errors import ConfigError
from contrastlib.losses.base import ContrastiveLoss, LossContract
from contrastlib.methods.base import ContrastiveModule
from contrastlib.methods.data import TrainData
from contrastlib.registry import METHODS

Features = dict[str, Tensor]


class SimCSEMode(Enum):
    unsupervised = "unsupervised"
    supervised = "supervised"
    scored = "scored"


@dataclass
class SimCSEConfig:
    #: unsupervised: each sentence twice under dropout; supervised: (anchor, positive[, negative]).
    mode: SimCSEMode = SimCSEMode.supervised


def _mode(config: Any) -> str:
    return str(config.mode.value if isinstance(config.mode, Enum) else config.mode)


@METHODS.register("simcse", summary="SimCSE: dropout views (unsupervised) or NLI triplets (supervised)")
class SimCSE(ContrastiveModule):
    Config = SimCSEConfig
    default_sampler = "no_duplicates"
    inputs = "strings"
    several_sources = True

    def __init__(self, encoder: Any, loss: Any, *, mode: str = "supervised", **kwargs: Any) -> None:
        if mode not in [m.value for m in SimCSEMode]:
            raise ValueError(f"mode must be one of {', '.join(m.value for m in SimCSEMode)}, got {mode!r}")
        data: TrainData | None = kwargs.get("data")
        super().__init__(encoder, loss, **kwargs)
        self.mode = mode
        #: Per column, the prompt put before its texts (the data's ``prompts``).
        self.column_prompts: tuple[str, ...] = data.prompts if data is not None else ()
        if any(self.column_prompts):  # the export names them (also for a module built in Python)
            encoder.prompts = named_prompts(self.column_prompts)
        if mode == "scored" and (data is None or data.scores is None):
            raise ValueError("scored SimCSE needs its data's pair scores (from_config(..., data=...))")
        #: Whether rows have graded scores (scored mode; or of several sources, some scored).
        self.scored = data is not None and data.scores is not None
        if self.scored:
            assert data is not None and data.scores is not None
            scores = torch.as_tensor(np.asarray(data.scores, dtype=np.float32))
            self.register_buffer("pair_scores", scores, persistent=False)
        self.pair_scores: Tensor

    # ------------------------------------------------------------------ protocol
    @classmethod
    def read_train_data(cls, path: str, config: Any, *, max_rows: int | None = None,
                        bad_rows: BadRows | None = None, columns: Sequence[str] | None = None,
                        prompts: Any = None) -> TrainData:
        bad = bad_rows or BadRows()
        mode = _mode(config)
        if mode == "scored":
            data = cls._read_scored(path, bad, max_rows, columns)
            data.prompts = column_prompts(prompts, 2)
            return data
        rows, roles = read_tuples(path, bad_rows=bad, columns=columns)
        if max_rows is not None:
            rows = rows[:max_rows]
        if mode == "supervised" and len(roles) < 2:
            raise ConfigError(
                f"method.mode: supervised SimCSE needs pairs or triplets, but {path} "
                "holds single sentences (use method.mode=unsupervised)"
            )
        if mode == "unsupervised":
            rows = first_columns(rows, 1)  # dropout views of the first column
            description = "single sentences (two dropout views each)"
        else:
            negatives = len(roles) - 2
            description = (
                "pairs (anchor, positive)" if negatives == 0
                else "triplets (anchor, positive, negative)" if negatives == 1
                else f"n-tuples (anchor, positive, {negatives} negatives)"
            )
        if bad.count:
            description += f"; {bad.summary()}"
        return TrainData(
            source=str(path), rows=rows, dataset=IndexedRows(rows), description=description,
            hard_negatives=mode == "supervised" and len(roles) >= 3, anchors=column(rows, 0),
            keys=rows.text_hashes() if isinstance(rows, TextTable) else None,
            prompts=column_prompts(prompts, 1 if mode == "unsupervised" else len(roles)),
        )

    @classmethod
    def _read_scored(cls, path: str, bad: BadRows, max_rows: int | None, columns: Sequence[str] | None) -> TrainData:
        description = "scored pairs (sentence1, sentence2, score)"
        rows: Sequence[tuple[str, ...]]
        if is_table(path):
            table, scores = read_scored_table(path, bad_rows=bad, columns=columns)
            rows, pair_scores = (table, scores) if max_rows is None else (table[:max_rows], scores[:max_rows])
            keys: Sequence[Any] | None = rows.text_hashes()
        else:
            pairs = read_scored_pairs(path, bad_rows=bad, columns=columns)
            rows = list(zip(pairs.sentences1, pairs.sentences2, strict=True))[:max_rows]
            pair_scores, keys = np.asarray(pairs.scores[: len(rows)], dtype=np.float64), None
        if bad.count:
            description += f"; {bad.summary()}"
        return TrainData(source=str(path), rows=rows, dataset=IndexedRows(rows), description=description,
                         anchors=column(rows, 0), scores=pair_scores, keys=keys)

    @classmethod
    def source_config(cls, config: Any, loss_cls: type[ContrastiveLoss]) -> Any:
        """A supervised run's source whose loss ranks by graded scores (``cosent``) is read
        as scored pairs."""
        if _mode(config) == "supervised" and "scores" in loss_cls.requires:
            return dataclasses.replace(config, mode=SimCSEMode.scored)
        return config

    @classmethod
    def loss_contract(cls, config: Any, data: TrainData) -> LossContract:
        who = f"{data.source} ({data.description})"
        if data.scores is not None:  # graded pairs: the loss must rank by the scores
            return LossContract(passes=frozenset({"scores"}), who=who)
        # dataset ids (per-example parameters) and, supervised, a key per candidate text
        return LossContract(provides=frozenset({"ids", "candidate_keys"}), hard_negatives=data.hard_negatives, who=who)

    def collator(self, data: TrainData | None = None) -> TextTupleCollator:
        enc: Any = self.encoder
        prompts = data.prompts if data is not None else self.column_prompts
        tokenize = HFTokenize(enc.tokenizer, enc.max_seq_length, include_prompt=enc.spec.include_prompt)
        return TextTupleCollator(tokenize, prompts=prompts)

    # ------------------------------------------------------------------ step
    def views(self, batch: TextBatch) -> list[Features]:  # type: ignore[override]
        if self.mode == "unsupervised":
            # one forward over [x; x]: the two halves get different dropout masks
            return [{k: torch.cat([v, v]) for k, v in batch.columns[0].items()}]
        if len(batch.columns) < 2:
            raise ValueError("supervised SimCSE needs (anchor, positive[, negative]) columns")
        return list(batch.columns)

    def pair(self, embeddings: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``(anchors [B, D], candidates [C, D])`` from the views' embeddings."""
        if self.mode == "unsupervised":
            anchors, positives = embeddings[0].chunk(2)
            return anchors, positives
        return embeddings[0], torch.cat(embeddings[1:])

    def contrast(self, embeddings: list[Tensor], batch: TextBatch) -> Tensor:
        anchors, candidates = self.pair(embeddings)
        keys = batch.text_keys
        # a sampler that groups related rows (mined, cluster) can put a row's positive in
        # the batch again, as another row's negative: not a negative for this row
        candidate_keys = keys[1:].reshape(-1) if keys is not None and self.mode == "supervised" else None
        scores = self.pair_scores[batch.ids] if self.scored else None
        loss: Tensor = self.loss_fn(self.loss_inputs(anchors, candidates, ids=batch.ids, candidate_keys=candidate_keys,
                                                     scores=scores))
        return loss
