"""Tokenising a batch of texts for a Hugging Face encoder: padding to a multiple, and the
masks that pool part of a text (the reward method's pool mark, :mod:`contrastlib.utils.marks`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlib.data.prompts import prompt_pool_mask
from contrastlib.utils.marks import split_pool_mark, split_prompts
from contrastlib.utils.shapes import padded_width


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str], max_length: int, *, pad_to_multiple_of: int | None = None,
    pool_marks: bool = False, pool_context: bool = False, include_prompt: bool = True,
) -> dict[str, Tensor]:
    """Token ids padded to the longest text, truncated to ``max_length``.

    With ``pad_to_multiple_of``, the padding goes on (masked, on the tokenizer's padding
    side) to the next multiple of it, never past the window: a run then meets a few
    widths instead of one per length.

    ``pool_marks``: texts carrying the pool mark (:mod:`contrastlib.utils.marks`) are
    tokenised without it, and the batch gets a ``pool_mask``: for those rows the real
    tokens that end after the mark (a token that takes the space before the reply, as
    byte-level BPE and SentencePiece ones do, is the reply's), for the others (and a row
    whose marked part was truncated away) the attention mask. The encoder pools with it.
    Without ``pool_marks`` texts go to the tokenizer as they are, and no batch has a
    ``pool_mask``: only the reward method's fitted texts are marked, never a corpus's.

    ``pool_context`` (implies ``pool_marks``) adds a ``context_mask`` as well: the real
    tokens before the reply (the whole text where there are none), and the encoder
    returns the two pools side by side (see :meth:`TextEncoder.forward`).

    A prompt's mark (:func:`~contrastlib.data.prompts.prompted`) is removed; with
    ``include_prompt=False`` the batch gets a ``pool_mask`` without the prompts' tokens, as
    sentence-transformers pools (:func:`~contrastlib.data.prompts.prompt_pool_mask`).
    """
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
    pool_marks = pool_marks or pool_context
    texts, prompts = split_prompts(texts)
    split = [split_pool_mark(t) if pool_marks else (t, None) for t in texts]
    marked = pool_context or any(start is not None for _, start in split)
    out = dict(
        tokenizer(
            [text for text, _ in split],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_offsets_mapping=marked,
        )
    )
    if marked:
        offsets = out.pop("offset_mapping")  # [B, T, 2] characters; special and padding tokens (0, 0)
        mask = out["attention_mask"]
        start = torch.tensor([-1 if s is None else s for _, s in split])[:, None]  # [B, 1]
        real = (offsets[..., 1] > offsets[..., 0]) & mask.bool()
        after = real & (offsets[..., 1] > start)  # as WindowPolicy counts a token as the reply's
        whole = (start < 0) | ~after.any(dim=1, keepdim=True)
        out["pool_mask"] = torch.where(whole, mask, after.to(mask.dtype))
        if pool_context:
            before = real & ~after
            out["context_mask"] = torch.where(before.any(dim=1, keepdim=True), before.to(mask.dtype), mask)
    if not include_prompt:
        without = prompt_pool_mask(tokenizer, prompts, out["attention_mask"], max_length)
        out["pool_mask"] = out["pool_mask"] * without if "pool_mask" in out else without
    if pad_to_multiple_of:
        longest = out["input_ids"].shape[1]
        extra = padded_width(longest, pad_to_multiple_of, max_length) - longest
        fill = {"input_ids": tokenizer.pad_token_id or 0, "token_type_ids": tokenizer.pad_token_type_id}
        side = (extra, 0) if tokenizer.padding_side == "left" else (0, extra)
        if extra > 0:
            out = {k: F.pad(v, side, value=fill.get(k, 0)) if v.dim() == 2 else v for k, v in out.items()}
    return out
