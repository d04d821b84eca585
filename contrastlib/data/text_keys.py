"""A stable key per text: what samplers and losses compare to tell two texts apart."""

from __future__ import annotations

import hashlib


def text_key(text: str) -> int:
    """A stable 63-bit key of ``text`` (the same in every process and on every run)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
