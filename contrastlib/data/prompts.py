"""Instruction prompts ("query: ", "passage: "): text put before every text of a column,
in training and wherever the model embeds, as sentence-transformers applies them.

``data.prompts`` is one string for every column, or a mapping from a column's role
(``anchor``, ``positive``, ``negative``; scored pairs: ``anchor`` and ``positive`` for the
two sentences) to its prompt; a role left out has none. The trained model keeps them under
sentence-transformers' names, ``query`` (the anchors') and ``document`` (the positives'),
in its export's ``prompts``, so that ``SentenceTransformer(DIR).encode(x, prompt_name="query")``
(or ``encode_query`` / ``encode_document``) embeds as the run trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contrastlib.errors import ConfigError

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


def with_prompt(texts: Sequence[str], prompt: str | None) -> list[str]:
    """``texts``, each after ``prompt``."""
    return [f"{prompt}{t}" for t in texts] if prompt else list(texts)
