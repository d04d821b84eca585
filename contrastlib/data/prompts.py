"""Instruction prompts ("query: ", "passage: "): text put before every text of a column,
in training and wherever the model embeds, as sentence-transformers applies them.

``data.prompts`` is one string for every column, or a mapping from a column's role
(``anchor``, ``positive``, ``negative``; scored pairs: ``anchor`` and ``positive`` for the
two sentences) to its prompt; a role left out has none. The trained model keeps them under
sentence-transformers' names, ``query`` (the anchors') and ``document`` (the positives'),
in its export's ``prompts``, so that ``SentenceTransformer(DIR).encode(x, prompt_name="query")``
(or ``encode_query`` / ``encode_document``) embeds as the run trained.

A prompt put before a text is followed by :data:`PROMPT_MARK`, a private-use character
the tokenisers remove: it says where the prompt ends, so that an encoder with
``include_prompt: false`` (sentence-transformers' ``Pooling(include_prompt=False)``, as
INSTRUCTOR models use) pools without the prompt's tokens, exactly as sentence-transformers
does: the prompt's tokens, the leading special token with them, are left out of the pool
(:func:`prompt_length`, :func:`prompt_pool_mask`); CLS pooling takes the first token after
them. With the default
``include_prompt: true`` the mark is dropped and the text is the prompt and the text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import torch
from torch import Tensor

from contrastlib.errors import ConfigError
from contrastlib.utils.marks import PROMPT_MARK, prompted, split_prompts

__all__ = ["PROMPT_MARK", "ROLES", "column_prompts", "named_prompts", "prompt_length", "prompt_pool_mask", "prompted", "split_prompts",
           "with_prompt"]


ROLES = ("anchor", "positive", "negative")


def role(column: int) -> str:
    """The role of column ``column`` of a tuple row."""
    return ROLES[min(column, 2)]


def column_prompts(prompts: Any, columns: int) -> tuple[str, ...]:
    """One prompt per column (``""``: none) from ``data.prompts``; ``()`` when unset."""
    if prompts is None:
        return ()
    if isinstance(prompts, str):
        return (prompts,) * columns
    if not isinstance(prompts, Mapping):
        raise ConfigError(f"data.prompts: a string or a mapping of role -> prompt, got {prompts!r}")
    unknown = set(prompts) - set(ROLES)
    if unknown:
        raise ConfigError(f"data.prompts: unknown role {sorted(unknown)[0]!r}; roles: {', '.join(ROLES)}")
    bad = [k for k, v in prompts.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"data.prompts.{bad[0]}: a prompt is a string, got {prompts[bad[0]]!r}")
    return tuple(str(prompts.get(role(c), "")) for c in range(columns))


def named_prompts(per_column: Sequence[str]) -> dict[str, str]:
    """The run's prompts under sentence-transformers' names: ``query`` (anchors),
    ``document`` (positives), and ``negative`` where the negatives' differ."""
    if not any(per_column):
        return {}
    names = {"query": per_column[0]}
    if len(per_column) > 1:
        names["document"] = per_column[1]
    if len(per_column) > 2 and per_column[2] != names.get("document"):
        names["negative"] = per_column[2]
    return names


@overload
def with_prompt(texts: list[str], prompt: str | None) -> list[str]: ...
@overload
def with_prompt(texts: Sequence[str], prompt: str | None) -> Sequence[str]: ...
def with_prompt(texts: Sequence[str], prompt: str | None) -> Sequence[str]:
    """``texts``, each after ``prompt`` (:func:`prompted`): a list for a list; for another
    sequence (a store on disk), a view that puts the prompt on each text as it is read."""
    if not prompt:
        return texts
    if isinstance(texts, list):
        return [prompted(prompt, t) for t in texts]
    return Prompted(texts, prompt)


class Prompted(Sequence[str]):
    """``texts`` read through, each after ``prompt``."""

    def __init__(self, texts: Sequence[str], prompt: str) -> None:
        self.texts, self.prompt = texts, prompt

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [prompted(self.prompt, t) for t in self.texts[i]]
        return prompted(self.prompt, self.texts[i])

    def __iter__(self) -> Iterator[str]:
        return (prompted(self.prompt, t) for t in self.texts)


def prompt_length(tokenizer: Any, prompt: str, max_length: int | None = None) -> int:
    """Tokens of a row that are its prompt's, by sentence-transformers' rule: the prompt
    tokenised alone (special tokens added, truncated to the window), less a trailing special
    token (``[SEP]``, ``</s>``) where the tokenizer adds one."""
    ids = list(tokenizer(prompt, truncation=max_length is not None, max_length=max_length)["input_ids"])
    special = set(tokenizer.all_special_ids)
    return len(ids) - int(bool(ids) and ids[-1] in special)


def prompt_pool_mask(tokenizer: Any, prompts: Sequence[str], attention_mask: Tensor,
                     max_length: int | None = None) -> Tensor:
    """The attention mask without each row's prompt tokens, as sentence-transformers'
    ``include_prompt=False`` pools: the first :func:`prompt_length` real tokens of a row
    (counted from its first real token, so left padding pools alike); a row without a
    prompt keeps every token."""
    lengths = {p: prompt_length(tokenizer, p, max_length) for p in set(prompts) if p}
    n = torch.tensor([lengths.get(p, 0) for p in prompts], dtype=torch.long)[:, None]
    position = attention_mask.long().cumsum(dim=1)  # 1, 2, ... over a row's real tokens
    return attention_mask * (position > n).to(attention_mask.dtype)
