"""The pool mark: a character that says where in a text the embedding starts pooling.

A reward model reads a whole (dialogue, reply) text, but the dialogue is the same for the
chosen and the rejected reply: ``method.pool: reply`` puts :data:`POOL_MARK` at the final
reply's first character, and the encoder then reads every token (attention sees the
dialogue) and pools only the tokens after the mark. Fitted texts stay plain strings, so
the text table, the embedding cache and scoring key them as before, and a marked text
never shares a cache entry with the unmarked one.

The mark is a private-use character (U+E000): no real text carries it (inputs are
cleaned of it), and it is removed before tokenising.
"""

from __future__ import annotations

from collections.abc import Sequence

POOL_MARK = "\ue000"


def split_pool_mark(text: str) -> tuple[str, int | None]:
    """``text`` without the mark, and the character where pooling starts (None: no mark,
    pool every token)."""
    at = text.find(POOL_MARK)
    if at < 0:
        return text, None
    return text.replace(POOL_MARK, ""), at


def strip_pool_mark(text: str) -> str:
    return text.replace(POOL_MARK, "")


#: Where a prompt put before a text ends (contrastlib/data/prompts.py; removed before
#: tokenising).
PROMPT_MARK = "\ue001"


def prompted(prompt: str | None, text: str) -> str:
    """``text`` after ``prompt`` (and the mark where the prompt ends)."""
    return f"{prompt}{PROMPT_MARK}{text}" if prompt else text


def split_prompts(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Each text as it is tokenised (the mark removed), and the prompt before it ("" none)."""
    plain, prompts = [], []
    for t in texts:
        at = t.find(PROMPT_MARK)
        plain.append(t if at < 0 else t[:at] + t[at + 1:])
        prompts.append("" if at < 0 else t[:at])
    return plain, prompts
