from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- models
# The real all-MiniLM-L6-v2 only where its weights matter: a published figure (STS-B,
# SICK-R, SciFact) or a peer on the same weights (sentence-transformers); those tests load
# it themselves. Everything else runs on ``tiny_model``: the same architecture type, layout
# and tokenizer, 32 wide, randomly initialised (seeded). Encoders are fresh per test, so
# no test sees another's mode, gradients or padding side.


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a seeded, randomly initialised tiny BERT saved as a sentence-transformers
    directory (all-MiniLM-L6-v2's layout and tokenizer): for ``model.name=...`` and
    ``TextEncoder(...)`` wherever the weights do not matter."""
    from tests_helpers import write_tiny_model

    return str(write_tiny_model(tmp_path_factory.mktemp("tiny-bert") / "model"))


@pytest.fixture
def tiny(tiny_model):
    """A fresh TextEncoder on ``tiny_model`` (train mode, like any new module)."""
    from contrastlib.encoders import TextEncoder

    return TextEncoder(tiny_model)


@pytest.fixture(autouse=True, scope="session")
def _session_embedding_cache(tmp_path_factory):
    """Embeddings that commands cache by default (``eval retrieval``, ``mine``, ``embed``
    without --cache-dir) go under the session's tmp dir, not ~/.cache/contrastlib: no test
    reads what an earlier session left (and no run is timed warm). Subprocesses inherit it."""
    old = os.environ.get("CONTRASTLIB_CACHE")
    os.environ["CONTRASTLIB_CACHE"] = str(tmp_path_factory.mktemp("embedding-cache"))
    yield
    if old is None:
        os.environ.pop("CONTRASTLIB_CACHE", None)
    else:
        os.environ["CONTRASTLIB_CACHE"] = old


@pytest.fixture(scope="session")
def stsb_sentences() -> list[str]:
    from contrastlib.data import read_scored_pairs

    d = read_scored_pairs(REPO / "datasets" / "stsb" / "test.tsv")
    return list(dict.fromkeys(d.sentences1 + d.sentences2))


@pytest.fixture
def tiny_no_dropout(tiny_model):
    from contrastlib.encoders import TextEncoder

    return TextEncoder(tiny_model, max_seq_length=32, dropout=0.0)


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


# --------------------------------------------------------------------------- shared runs
@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory, tiny_model) -> Path:
    """One short supervised SimCSE fit through the CLI (``contrastlib fit simcse-snli`` on
    the tiny BERT), for the tests that only read a finished run's outputs (run directory,
    reload, export, report). Tests that write must copy it first."""
    from tests_helpers import SMALL_STS

    from contrastlib.cli.main import main

    out = tmp_path_factory.mktemp("quickstart-run")
    sts = out / "sts.tsv"
    sts.write_text(SMALL_STS)
    code = main([
        "fit", "simcse-snli", f"output_dir={out}", "name=smoke", f"model.name={tiny_model}",
        "data.max_rows=48", "data.batch_size=8", "model.max_seq_length=24", "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1", "trainer.checkpoint_every_n_steps=2", "trainer.enable_progress_bar=false",
        f"eval.sts=[{sts}]", "eval.every_n_epochs=1", "optim.lr=1e-4",
    ])
    assert code == 0
    return out / "smoke"
