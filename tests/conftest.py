from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def minilm():
    from contrastlib.encoders import TextEncoder

    return TextEncoder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def stsb_sentences() -> list[str]:
    from contrastlib.data import read_scored_pairs

    d = read_scored_pairs(REPO / "contrastlib" / "datasets" / "stsb" / "test.tsv")
    return list(dict.fromkeys(d.sentences1 + d.sentences2))


@pytest.fixture(scope="session")
def minilm_no_dropout():
    from contrastlib.encoders import TextEncoder

    return TextEncoder("all-MiniLM-L6-v2", max_seq_length=32, dropout=0.0)
