"""What a method gives the pipeline before any model loads: its training data and what
samplers and the loss can be given from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from torch.utils.data import Dataset


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
class NoConfig:
    """A method without parameters of its own."""


def config_kwargs(config: Any) -> dict[str, Any]:
    """A method ``Config`` instance as plain keyword arguments (enums as their values)."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in dataclasses.asdict(config).items()}
