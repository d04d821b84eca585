"""What a method gives the pipeline before any model loads: its training data and what
samplers and the loss can be given from it; and the same data as a
``LightningDataModule`` for a Trainer of one's own."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import Dataset

from contrastlib.errors import ConfigError
from contrastlib.registry import SAMPLERS
from contrastlib.samplers.options import check_sampler
from contrastlib.training.loader import build_loader
from contrastlib.training.resume import ResumableLoader


@dataclass
class TrainData:
    """A method's training data, read before any model loads."""

    #: The file it came from (for messages).
    source: str
    #: One key per row for the batch sampler (the no-duplicates sampler reads the texts).
    rows: Sequence[Any]
    #: Items for the collator, one per row, in the same order.
    dataset: Dataset[Any]
    #: What each row holds, e.g. "triplets (anchor, positive, negative)".
    description: str
    #: Whether the loss receives candidates beyond the positives (hard negatives).
    hard_negatives: bool = False
    #: Views per example the loss receives.
    views: int = 2
    #: A class per row (samplers that group by class; default: none).
    labels: Sequence[Any] | None = None
    #: Rows to keep with each row, in order of preference (the mined sampler).
    neighbours: Sequence[Sequence[int]] | None = None
    #: Encoder inputs of each row's anchor (texts, image tensors): a sampler that needs
    #: embeddings gets them through the encoder being trained. None: this data has none.
    anchors: Sequence[Any] | None = None
    #: Dataset items are indexed ``epoch * rows + row`` (views drawn per epoch, seeded).
    epoch_indexed: bool = False
    #: What a batch sampler compares per row (its texts), when ``rows`` are not that.
    keys: Sequence[Any] | None = None
    #: A graded score per row (scored pairs), which the loss receives as ``scores``.
    scores: Sequence[float] | np.ndarray | None = None
    #: Per column, the prompt put before its texts (``data.prompts``; empty: none).
    prompts: tuple[str, ...] = ()
    #: Several sources (``data.train`` a mapping): each one's own data, in order. This
    #: TrainData's rows and dataset are then theirs one after another
    #: (:mod:`contrastlib.methods.sources`); empty: one source.
    parts: tuple[SourcePart, ...] = ()
    #: How the sources' batches follow one another: ``proportional`` or ``round_robin``.
    composition: str = "proportional"

    def sampler_rows(self) -> Sequence[Any]:
        """Per row, what a batch sampler reads: ``keys``, else the rows themselves."""
        return self.keys if self.keys is not None else self.rows

    def sampler_inputs(self) -> dict[str, Any]:
        """What a sampler can be given: ``labels``, ``neighbours``, ``embeddings``
        (the last computed once the encoder exists)."""
        out: dict[str, Any] = {"labels": self.labels, "neighbours": self.neighbours}
        out = {k: v for k, v in out.items() if v is not None}
        if self.anchors is not None:
            out["embeddings"] = None
        return out


@dataclass
class SourcePart:
    """One source of a run on several (``data.train.NAME``)."""

    name: str
    data: TrainData
    #: Its loss is multiplied by this.
    weight: float = 1.0


def refuse_columns(columns: Sequence[str] | None, why: str, prompts: Any = None) -> None:
    """``data.columns`` or ``data.prompts`` set for a method whose data has no text columns."""
    if columns:
        raise ConfigError(f"data.columns: {why}; columns are picked in text tables (pairs, triplets, scored pairs)")
    if prompts is not None:
        raise ConfigError(f"data.prompts: {why}; prompts go before the texts of pairs, triplets and scored pairs")


@dataclass
class NoConfig:
    """A method without parameters of its own."""


def config_kwargs(config: Any) -> dict[str, Any]:
    """A method ``Config`` instance as plain keyword arguments (enums as their values)."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in dataclasses.asdict(config).items()}


class MethodDataModule(pl.LightningDataModule):
    """A method's training data for a ``pl.Trainer`` of your own (the Python API)::

        encoder = TextEncoder("all-MiniLM-L6-v2")
        data = SimCSE.datamodule("nli.tsv", SimCSEConfig(), encoder, batch_size=64)
        model = SimCSE.from_config(encoder, InfoNCELoss(0.05), SimCSEConfig(), data=data.data)
        pl.Trainer(max_epochs=1).fit(model, datamodule=data)

    ``sampler`` defaults to the method's own; its options are checked as ``data.sampler_options``.
    """

    def __init__(self, data: TrainData, *, batch_size: int, sampler: str, sampler_options: Mapping[str, Any] | None = None,
                 num_workers: int = 0, drop_last: bool = False, seed: int = 42, embed_batch_size: int = 128,
                 embed_precision: str = "fp32") -> None:
        super().__init__()
        SAMPLERS.check(sampler, key="sampler")
        self.data = data
        self.sampler = sampler
        self.sampler_options = check_sampler(sampler, sampler_options or {}, data, batch_size)
        self.batch_size, self.num_workers, self.drop_last, self.seed = batch_size, num_workers, drop_last, seed
        self.embed_batch_size, self.embed_precision = embed_batch_size, embed_precision

    def train_dataloader(self) -> ResumableLoader:
        assert self.trainer is not None, "a Trainer asks for the loader"
        module: Any = self.trainer.lightning_module
        return build_loader(
            self.data, collator=module.collator, encoder=module.encoder, batch_size=self.batch_size, sampler=self.sampler, sampler_options=self.sampler_options,
            num_workers=self.num_workers, drop_last=self.drop_last, seed=self.seed,
            embed_batch_size=self.embed_batch_size, embed_precision=self.embed_precision,
        )
