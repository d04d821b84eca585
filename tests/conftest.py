from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    """A path under ../shared/data; skips the test where it is absent (a user's clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data is only on CI and dev machines)")
    return path


@pytest.fixture(scope="session")
def minilm():
    from contrastlib.encoders import TextEncoder

    return TextEncoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def stsb_sentences() -> list[str]:
    from contrastlib.data import read_scored_pairs

    d = read_scored_pairs(REPO / "datasets" / "stsb" / "test.tsv")
    return list(dict.fromkeys(d.sentences1 + d.sentences2))
