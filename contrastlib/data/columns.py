"""Which columns of a file or table play which role: found by their names
(:data:`ROLE_ALIASES`, :data:`SCORE_ALIASES`) or named in ``data.columns``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from contrastlib.errors import ConfigError, DataError

#: Accepted column names, by role, for pair/triplet files (first match wins).
ROLE_ALIASES: dict[str, tuple[str, ...]] = {
    "anchor": ("anchor", "sentence1", "sent0", "query", "premise", "text1", "sentence_a"),
    "positive": ("positive", "sentence2", "sent1", "pos", "hypothesis", "entailment", "text2", "sentence_b"),
    "negative": ("negative", "hard_negative", "sent2", "neg", "contradiction", "text3", "sentence_c"),
}
SCORE_ALIASES = ("score", "label", "similarity")


def resolve_columns(path: Path, columns: Sequence[str], line: int | None) -> list[str]:
    """Map the file's columns to roles (anchor, positive[, negative...]) in that order.

    Negatives are one ``negative`` column (or an alias), or numbered columns
    ``negative_1 ... negative_n`` (the n-tuple layout that ``contrastlib mine`` and
    sentence-transformers' miner write).
    """
    found: list[str] = []
    for role in ("anchor", "positive"):
        for alias in ROLE_ALIASES[role]:
            if alias in columns:
                found.append(alias)
                break
        else:
            raise DataError(
                path,
                f"missing column {role!r} (accepted names: {', '.join(ROLE_ALIASES[role])}); "
                f"found columns: {', '.join(columns)}",
                line,
            )
    single = next((a for a in ROLE_ALIASES["negative"] if a in columns), None)
    numbered = sorted(
        (c for c in columns if re.fullmatch(r"negative_[0-9]+", c)), key=lambda c: int(c.split("_")[1])
    )
    if single is not None and numbered:
        raise DataError(path, f"both {single!r} and numbered negative columns; keep one layout", line)
    if numbered and [int(c.split("_")[1]) for c in numbered] != list(range(1, len(numbered) + 1)):
        raise DataError(path, f"numbered negative columns must run negative_1..negative_n, found {', '.join(numbered)}", line)
    return found + ([single] if single is not None else numbered)


def pick_columns(path: Path, found: Sequence[str], line: int | None, columns: Sequence[str] | None) -> list[str]:
    """``columns`` as given (each must exist), else the columns found by their role names."""
    if not columns:
        return resolve_columns(path, found, line)
    repeated = sorted({c for c in columns if list(columns).count(c) > 1})
    if repeated:
        raise ConfigError(f"data.columns: {repeated[0]!r} is named twice in {list(columns)}")
    for c in columns:
        if c not in found:
            raise DataError(path, f"data.columns: no column {c!r}; found columns: {', '.join(found)}", line)
    if len(columns) < 1:
        raise ConfigError("data.columns: name at least one column")
    return list(columns)


def scored_columns(path: Path, found: Sequence[str], line: int | None, columns: Sequence[str] | None) -> list[str]:
    """The two text columns and the score column: ``columns`` as given, else by name."""
    if columns:
        if len(columns) != 3:
            raise ConfigError(f"data.columns: scored pairs take three columns (text, text, score), got {list(columns)}")
        return pick_columns(path, found, line, columns)
    for name in ("sentence1", "sentence2"):
        if name not in found:
            raise DataError(path, f"missing column {name!r}; found columns: {', '.join(found)}", line)
    score_col = next((c for c in SCORE_ALIASES if c in found), None)
    if score_col is None:
        raise DataError(
            path, f"missing column 'score' (accepted: {', '.join(SCORE_ALIASES)}); found columns: {', '.join(found)}", line
        )
    return ["sentence1", "sentence2", score_col]
