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

    d = read_scored_pairs(REPO / "datasets" / "stsb" / "test.tsv")
    return list(dict.fromkeys(d.sentences1 + d.sentences2))


@pytest.fixture(scope="session")
def minilm_no_dropout():
    from contrastlib.encoders import TextEncoder

    return TextEncoder("all-MiniLM-L6-v2", max_seq_length=32, dropout=0.0)


# --------------------------------------------------------------------------- disk
# A full run writes about 30 GB of checkpoints, caches and exports under tmp_path (each
# resume test keeps several MiniLM checkpoints). A passed test's directory is removed as
# soon as the test is torn down, so the peak is one test's files, not the whole suite's;
# a failed test's stays for inspection.
_PASSED = pytest.StashKey[bool]()
_TMP = pytest.StashKey[Path]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "setup" and "tmp_path" in getattr(item, "funcargs", {}):
        item.stash[_TMP] = item.funcargs["tmp_path"]
    elif report.when == "call":
        item.stash[_PASSED] = report.passed
    elif report.when == "teardown" and item.stash.get(_PASSED, False) and _TMP in item.stash:
        import shutil

        shutil.rmtree(item.stash[_TMP], ignore_errors=True)
    return report
