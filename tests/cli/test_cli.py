"""CLI: verbs, --json, one-line errors with exit code 2, fit -> reload -> export round trip.

Runs on the tiny BERT (``tiny_model``): what is checked is the CLI's plumbing and
arithmetic, against references computed here; the published figures of the real
all-MiniLM-L6-v2 are tests/evaluation/test_sts_reference.py's."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tests_helpers import QUICKSTART_RUN_STEPS, train_losses

from contrastlib.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SNLI = REPO / "datasets" / "nli" / "snli-dev.tsv"


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contrastlib", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_sts(tmp_path_factory) -> Path:
    src = (REPO / "datasets" / "stsb" / "test.tsv").read_text().splitlines()
    p = tmp_path_factory.mktemp("sts") / "small.tsv"
    p.write_text("\n".join(src[:121]) + "\n")
    return p


def test_help_for_every_verb():
    for verb in (["fit"], ["eval", "sts"], ["embed"], ["export"], ["list"]):
        with pytest.raises(SystemExit) as info:
            main([*verb, "--help"])
        assert info.value.code == 0


def test_list_json(capsys):
    assert main(["list", "--json"]) == 0
    payload = last_json(capsys.readouterr().out)
    assert {"info_nce"} <= {e["name"] for e in payload["losses"]}
    assert {"mean", "cls", "last"} <= {e["name"] for e in payload["poolings"]}
    assert "simcse" in {e["name"] for e in payload["methods"]}
    assert "no_duplicates" in {e["name"] for e in payload["samplers"]}


def _read_sts(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows], [r[1] for r in rows], np.array([float(r[2]) for r in rows])


def test_eval_sts_json_matches_an_independent_reference(capsys, small_sts, tiny_model):
    """``eval sts --json`` against another route to every figure: sentence-transformers'
    encode of the same model, scipy's correlations, Wang and Isola's geometry in numpy."""
    from scipy.stats import pearsonr, spearmanr
    from sentence_transformers import SentenceTransformer

    assert main(["eval", "sts", "--model", tiny_model, "--data", str(small_sts), "--json", "--no-progress"]) == 0
    out = last_json(capsys.readouterr().out)
    s1, s2, gold = _read_sts(small_sts)
    st = SentenceTransformer(tiny_model, device="cpu")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    e1, e2 = (unit(st.encode(s, batch_size=16).astype(np.float64)) for s in (s1, s2))
    cos = (e1 * e2).sum(1)
    assert out["n_pairs"] == len(gold) == 120
    assert out["spearman"] == pytest.approx(100 * spearmanr(cos, gold).statistic, abs=1e-3)
    assert out["pearson"] == pytest.approx(100 * pearsonr(cos, gold).statistic, abs=1e-3)
    # alignment: mean squared distance of the pairs scored >= 4; uniformity: log of the
    # mean of exp(-2 squared distance) over every two distinct sentences
    pos = gold >= 4.0
    assert 5 < pos.sum() < len(gold)
    assert out["alignment"] == pytest.approx(float(((e1[pos] - e2[pos]) ** 2).sum(1).mean()), rel=1e-4)
    uniq = unit(st.encode(list(dict.fromkeys(s1 + s2)), batch_size=16).astype(np.float64))
    sq = ((uniq[:, None, :] - uniq[None, :, :]) ** 2).sum(-1)[np.triu_indices(len(uniq), 1)]
    assert out["uniformity"] == pytest.approx(float(np.log(np.mean(np.exp(-2 * sq)))), rel=1e-4)


def test_spearman_matches_scipy(tiny, small_sts):
    from scipy.stats import pearsonr, spearmanr

    from contrastlib.data import read_scored_pairs
    from contrastlib.evaluation import evaluate_sts

    d = read_scored_pairs(small_sts)
    r = evaluate_sts(tiny, d)
    e1, e2 = tiny.encode(d.sentences1), tiny.encode(d.sentences2)
    cos = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    assert r.spearman == pytest.approx(100 * spearmanr(cos, d.scores).statistic, abs=1e-4)
    assert r.pearson == pytest.approx(100 * pearsonr(cos, d.scores).statistic, abs=1e-4)


@pytest.mark.parametrize(
    "content,needle",
    [
        ("sentence1\tsentence2\tscore\na\tb\n", "bad.tsv:2: expected 3 columns"),
        ("sentence1\tsentence2\tscore\na\tb\tx\n", "bad.tsv:2: score 'x' is not a number"),
        ("", "bad.tsv: file is empty"),
    ],
)
def test_bad_data_is_one_line_exit_2(tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    assert main(["eval", "sts", "--model", "all-MiniLM-L6-v2", "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and needle in err


def test_bad_config_key_is_one_line_exit_2_in_a_real_process():
    proc = run_cli("fit", "simcse-snli", "trainer.max_epoch=1")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0
    assert "unknown key 'trainer.max_epoch'" in err and "did you mean 'max_epochs'" in err


def test_bad_tsv_is_exactly_one_line(tmp_path, capsys):
    """In-process: the real exit path (``python -m contrastlib``, no traceback on stderr)
    is test_bad_config_key_is_one_line_exit_2_in_a_real_process's."""
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence1\tsentence2\na\tb\n")
    assert main(["eval", "sts", "--model", "all-MiniLM-L6-v2", "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == f"error: {bad}:1: missing column 'score' (accepted: score, label, similarity); found columns: sentence1, sentence2"


def test_embed_npy_and_safetensors(tmp_path, capsys, tiny, tiny_model, monkeypatch):
    monkeypatch.setenv("CONTRASTLIB_CACHE", str(tmp_path / "cache"))
    texts = tmp_path / "t.txt"
    texts.write_text("first sentence\nsecond one\n\nthird\n")
    assert main(["embed", "--model", tiny_model, "--input", str(texts), "--out", str(tmp_path / "e.npy"), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["n"] == 3
    emb = np.load(tmp_path / "e.npy")
    np.testing.assert_allclose(emb, tiny.encode(["first sentence", "second one", "third"]), atol=1e-5)
    assert main(["embed", "-m", tiny_model, "-i", str(texts), "-o", str(tmp_path / "e.safetensors")]) == 0
    from safetensors.numpy import load_file

    np.testing.assert_allclose(load_file(str(tmp_path / "e.safetensors"))["embeddings"], emb, atol=1e-6)
    assert main(["embed", "-m", tiny_model, "-i", str(texts), "-o", str(tmp_path / "e.txt")]) == 2


@pytest.fixture
def trained_run(quickstart_run) -> Path:
    """The session's short supervised SimCSE fit through the CLI (conftest.quickstart_run)."""
    return quickstart_run


def test_fit_writes_a_complete_run_dir(trained_run):
    run = trained_run
    for rel in ("contrastlib_run.json", "config.yaml", "checkpoints/last.ckpt", "logs/metrics.csv", "model/modules.json", "metrics.json"):
        assert (run / rel).exists(), rel
    assert json.loads((run / "contrastlib_run.json").read_text())["status"] == "finished"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == QUICKSTART_RUN_STEPS
    assert set(metrics["before"]) == set(metrics["after"])
    assert list((run / "tensorboard").glob("events.*"))


def test_trained_model_changed_and_reloads_from_run_dir_and_checkpoint(trained_run, tiny, stsb_sentences):
    from contrastlib.loading import load_encoder

    texts = stsb_sentences[:50]
    from_run = load_encoder(trained_run).encode(texts)
    from_ckpt = load_encoder(trained_run / "checkpoints" / "last.ckpt").encode(texts)
    base = tiny.encode(texts)
    np.testing.assert_allclose(from_run, from_ckpt, atol=1e-5)
    assert np.abs(from_run - base).max() > 1e-4, "training changed nothing"


def test_export_loads_in_sentence_transformers(trained_run, tmp_path, stsb_sentences, capsys):
    from sentence_transformers import SentenceTransformer

    from contrastlib.loading import load_encoder

    out = tmp_path / "exported"
    assert main(["export", str(trained_run / "checkpoints" / "last.ckpt"), "--out", str(out), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["out"] == str(out)
    texts = stsb_sentences[:300]
    ours = load_encoder(trained_run).encode(texts)
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts, normalize_embeddings=False)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999


def test_resume_continues_from_last_checkpoint(trained_run, tmp_path, tiny_model):
    import shutil

    run = tmp_path / "runs" / "smoke"
    shutil.copytree(trained_run, run)
    code = main(
        [
            "fit", "simcse-snli",
            f"output_dir={tmp_path / 'runs'}", "name=smoke", "resume=true", f"model.name={tiny_model}",
            "data.max_rows=48", "data.batch_size=8", "model.max_seq_length=24", f"trainer.max_steps={QUICKSTART_RUN_STEPS + 2}",
            "trainer.max_epochs=5", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
            "trainer.checkpoint_every_n_steps=2", "eval.sts=[]", "optim.lr=1e-4",
        ]
    )
    assert code == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == QUICKSTART_RUN_STEPS + 2
    # the first run's log is still there; the resumed run logged beside it
    assert (run / "logs" / "metrics.csv").read_text() == (trained_run / "logs" / "metrics.csv").read_text()
    assert (run / "logs" / "resume-1" / "metrics.csv").is_file()


def test_existing_run_dir_is_never_overwritten(trained_run, tmp_path):
    import shutil

    from contrastlib.jobs import JOB_DIR_ENV, Job

    shutil.copytree(trained_run, tmp_path / "smoke")  # the shared run's directory stays as it is
    job = Job.open(tmp_path, "smoke", kind="fit")
    with job.running():
        assert job.dir == (tmp_path / "smoke-2").resolve()
    assert JOB_DIR_ENV not in __import__("os").environ  # the next job chooses afresh


def test_unsupervised_fit_with_dataloader_workers(tmp_path, tiny_model):
    """Unsupervised SimCSE end to end, tokenising in a DataLoader worker process."""
    from contrastlib.loading import load_encoder

    code = main(
        [
            "fit", "simcse-unsup-wiki",
            f"output_dir={tmp_path}", "name=unsup", f"model.name={tiny_model}", "data.max_rows=64", "data.batch_size=16",
            "data.num_workers=1", "trainer.max_steps=2", "trainer.precision=32-true",
            "trainer.enable_progress_bar=false", "eval.sts=[]",
        ]
    )
    assert code == 0
    run = tmp_path / "unsup"
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2
    assert load_encoder(run).spec.max_seq_length == 32


def test_supervised_on_single_sentences_fails_before_work(tmp_path, capsys):
    code = main(
        [
            "fit", "simcse-snli", f"output_dir={tmp_path}",
            f"data.train={REPO / 'datasets' / 'wiki' / 'wiki-sentences-3k.txt'}",
        ]
    )
    assert code == 2
    assert "method.mode=unsupervised" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing may be written before the inputs are valid"


def _first_batch_reference(tiny_model: str, rows: int, loss: str) -> float:
    """The named loss, by hand, on the first ``rows`` SNLI triplets through a fresh tiny
    encoder (dropout off): what the run's first step must log. The batch is the whole of
    those rows; each loss is a mean over its rows, so the sampler's order plays no part."""
    from contrastlib.data.readers import read_tuples
    from contrastlib.encoders import TextEncoder
    from contrastlib.losses import ATILoss, dcl, info_nce, mv_dhel

    triplets = read_tuples(SNLI)[0][:rows]
    enc = TextEncoder(tiny_model, max_seq_length=64, dropout=0.0).eval()
    with torch.no_grad():
        a, p, n = (enc(enc.tokenize([r[i] for r in triplets])).float() for i in range(3))
        if loss == "info_nce":  # the default
            return float(info_nce(a, torch.cat([p, n]), temperature=0.05))
        if loss == "info_nce_symmetric":  # anchors -> (positives, negatives), positives -> anchors
            return float((info_nce(a, torch.cat([p, n]), temperature=0.05) + info_nce(p, a, temperature=0.05)) / 2)
        if loss == "mv_dhel":  # unsupervised: two views of each anchor, identical without dropout
            return float(mv_dhel(torch.stack([a, a]), temperature=0.2))
        if loss == "dclw":
            return float(dcl(a, p, temperature=0.2, sigma=0.5, extra_negatives=n))
        if loss == "ati":  # its training value (the surrogate), every temperature at 0.2
            ati = ATILoss(rows, temperature=0.2).train()
            return float(ati(a, torch.cat([p, n]), ids=torch.arange(rows)))
    raise AssertionError(loss)


@pytest.mark.parametrize(
    "overrides,reference",
    [
        # temperatures other than the losses' defaults (0.1): a setting that did not reach the
        # loss shows in the value
        (["loss.name=ati", "loss.temperature=0.2"], "ati"),
        (["loss.name=info_nce", "loss.chunk_size=4", "loss.symmetric=true"], "info_nce_symmetric"),
        (["method.mode=unsupervised", "loss.name=mv_dhel", "loss.temperature=0.2"], "mv_dhel"),
        (["loss.name=dclw", "loss.temperature=0.2"], "dclw"),
    ],
)
def test_fit_with_other_losses(tmp_path, tiny_model, overrides, reference):
    """The named loss, with its parameters, is the one trained: the first step's logged
    loss equals it computed by hand on the same rows, and not the default loss."""
    code = main(
        [
            "fit", "simcse-snli", f"output_dir={tmp_path}", "name=x", f"model.name={tiny_model}", "model.dropout=0.0",
            "data.max_rows=8", "data.batch_size=8", "trainer.max_steps=1", "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1", "trainer.precision=32-true", "eval.sts=[]", "loss.temperature=null",
            *overrides,
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "x" / "metrics.json").read_text())["steps"] == 1
    logged = train_losses(tmp_path / "x")
    expected = _first_batch_reference(tiny_model, 8, reference)
    assert logged[0] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    default = _first_batch_reference(tiny_model, 8, "info_nce")
    assert abs(expected - default) > 1e-3, "the check would not tell this loss from the default one"
