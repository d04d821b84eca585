"""Collators: tokenisation happens here, so it runs inside DataLoader workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor


class TextTupleCollator:
    """Tokenise a batch of text tuples column by column.

    Returns one tokenised batch per column: ``[anchors, positives(, negatives)]``, each a
    dict of ``[B, T]`` tensors padded to the longest text in that column.
    """

    def __init__(self, tokenize: Callable[[Sequence[str]], dict[str, Tensor]]) -> None:
        self.tokenize = tokenize

    def __call__(self, rows: Sequence[tuple[str, ...]]) -> list[dict[str, Tensor]]:
        n_cols = len(rows[0])
        return [self.tokenize([r[c] for r in rows]) for c in range(n_cols)]


class HFTokenize:
    """Picklable tokenise function (for worker processes) over a Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return dict(
            self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
        )
