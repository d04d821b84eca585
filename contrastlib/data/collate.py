"""Collators: tokenisation happens here, so it runs inside DataLoader workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastlib.data.prompts import prompt_pool_mask, prompted, split_prompts
from contrastlib.data.tables import take_rows
from contrastlib.data.text_keys import text_key


@dataclass
class TextBatch:
    """A tokenised batch: one dict of ``[B, T]`` tensors per column, dataset ids ``[B]``,
    and ``text_keys [columns, B]``: a 63-bit hash of each raw text, so a loss can tell
    that two candidates are the same text (a duplicate of a positive is no negative)."""

    columns: list[dict[str, Tensor]]
    ids: Tensor
    text_keys: Tensor | None = None

    def to(self, device: torch.device | str) -> TextBatch:
        keys = self.text_keys.to(device) if self.text_keys is not None else None
        return TextBatch([{k: v.to(device) for k, v in c.items()} for c in self.columns], self.ids.to(device), keys)


class IndexedRows(Dataset[tuple[int, tuple[str, ...]]]):
    """Rows of texts, each returned with its index (per-example parameters need it)."""

    def __init__(self, rows: Sequence[tuple[str, ...]], offset: int = 0) -> None:
        self.rows = rows
        #: Added to each index returned: where these rows start among several sources'.
        self.offset = offset

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, tuple[str, ...]]:
        return self.offset + i, self.rows[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[int, tuple[str, ...]]]:
        """A batch's rows at once (the DataLoader's batched fetch): one gather per column
        from a memory-mapped table."""
        return [(self.offset + i, r) for i, r in zip(indices, take_rows(self.rows, indices), strict=True)]


class TextTupleCollator:
    """Tokenise a batch of ``(id, text tuple)`` items column by column.

    Returns a :class:`TextBatch`: one tokenised batch per column ``[anchors,
    positives(, negatives)]``, each padded to the longest text in that column.
    """

    def __init__(self, tokenize: Callable[[Sequence[str]], dict[str, Tensor]], prompts: Sequence[str] = ()) -> None:
        self.tokenize = tokenize
        #: Per column, the text put before each of its texts (``data.prompts``).
        self.prompts = tuple(prompts)

    def __call__(self, items: Sequence[tuple[int, tuple[str, ...]]]) -> TextBatch:
        rows = [r for _, r in items]
        prompt = self.prompts or ("",) * len(rows[0])
        columns = [self.tokenize([prompted(prompt[c], r[c]) for r in rows]) for c in range(len(rows[0]))]
        keys = torch.tensor([[text_key(r[c]) for r in rows] for c in range(len(rows[0]))], dtype=torch.long)
        return TextBatch(columns, torch.tensor([i for i, _ in items], dtype=torch.long), keys)


class HFTokenize:
    """Picklable tokenise function (for worker processes) over a Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any, max_length: int, *, include_prompt: bool = True) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        #: False: a ``pool_mask`` without each text's prompt tokens (data/prompts.py).
        self.include_prompt = include_prompt

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        plain, prompts = split_prompts(texts)
        out = dict(self.tokenizer(plain, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"))
        if not self.include_prompt:
            out["pool_mask"] = prompt_pool_mask(self.tokenizer, prompts, out["attention_mask"], self.max_length)
        return out
