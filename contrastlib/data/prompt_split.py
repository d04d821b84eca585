"""Held-out splits of preference rows by a hash of the prompt: a prompt never sits on
both sides, on any machine and in any row order."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from contrastlib.data.preference import PreferenceRow


def prompt_bucket(prompt: str, salt: str = "") -> float:
    """A number in ``[0, 1)`` fixed by the prompt's text (blake2b), for splits that keep
    every prompt on one side on any machine and in any order."""
    digest = hashlib.blake2b((salt + prompt.strip()).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_by_prompt(
    rows: Sequence[PreferenceRow], test_fraction: float, *, salt: str = ""
) -> tuple[list[PreferenceRow], list[PreferenceRow]]:
    """``(train, test)``: a row is in test when its prompt's bucket is below
    ``test_fraction``, so no prompt sits on both sides."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    train: list[PreferenceRow] = []
    test: list[PreferenceRow] = []
    for r in rows:
        (test if prompt_bucket(r.prompt, salt) < test_fraction else train).append(r)
    return train, test
