"""CLI: verbs, --json, one-line errors with exit code 2, fit -> reload -> export round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contrastlib.cli.main import main

REPO = Path(__file__).resolve().parents[2]


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


def test_eval_sts_json_matches_python_api(capsys, small_sts, minilm):
    from contrastlib.data import read_scored_pairs
    from contrastlib.evaluation import evaluate_sts

    assert main(["eval", "sts", "--model", "all-MiniLM-L6-v2", "--data", str(small_sts), "--json", "--no-progress"]) == 0
    out = last_json(capsys.readouterr().out)
    ref = evaluate_sts(minilm, read_scored_pairs(small_sts))
    assert out["n_pairs"] == 120
    assert out["spearman"] == pytest.approx(ref.spearman, abs=1e-6)
    # geometry metrics: the same pure functions the align_uniform loss uses
    from contrastlib.losses import alignment, uniformity

    d = read_scored_pairs(small_sts)
    pos = [i for i, s in enumerate(d.scores) if s >= 4.0]
    e1 = minilm.encode([d.sentences1[i] for i in pos], convert_to_numpy=False)
    e2 = minilm.encode([d.sentences2[i] for i in pos], convert_to_numpy=False)
    assert out["alignment"] == pytest.approx(float(alignment(e1, e2)), rel=1e-4)
    uniq = list(dict.fromkeys(d.sentences1 + d.sentences2))
    assert out["uniformity"] == pytest.approx(float(uniformity(minilm.encode(uniq, convert_to_numpy=False))), rel=1e-4)


def test_spearman_matches_scipy(minilm, small_sts):
    from scipy.stats import pearsonr, spearmanr

    from contrastlib.data import read_scored_pairs
    from contrastlib.evaluation import evaluate_sts

    d = read_scored_pairs(small_sts)
    r = evaluate_sts(minilm, d)
    e1, e2 = minilm.encode(d.sentences1), minilm.encode(d.sentences2)
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
    proc = run_cli("fit", "quickstart", "trainer.max_epoch=1")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0
    assert "unknown key 'trainer.max_epoch'" in err and "did you mean 'max_epochs'" in err


def test_bad_tsv_in_a_real_process_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence1\tsentence2\na\tb\n")
    proc = run_cli("eval", "sts", "--model", "all-MiniLM-L6-v2", "--data", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {bad}:1: missing column 'score' (accepted: score, label, similarity); found columns: sentence1, sentence2"


def test_embed_npy_and_safetensors(tmp_path, capsys, minilm):
    texts = tmp_path / "t.txt"
    texts.write_text("first sentence\nsecond one\n\nthird\n")
    assert main(["embed", "--model", "all-MiniLM-L6-v2", "--input", str(texts), "--out", str(tmp_path / "e.npy"), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["n"] == 3
    emb = np.load(tmp_path / "e.npy")
    np.testing.assert_allclose(emb, minilm.encode(["first sentence", "second one", "third"]), atol=1e-5)
    assert main(["embed", "-m", "all-MiniLM-L6-v2", "-i", str(texts), "-o", str(tmp_path / "e.safetensors")]) == 0
    from safetensors.numpy import load_file

    np.testing.assert_allclose(load_file(str(tmp_path / "e.safetensors"))["embeddings"], emb, atol=1e-6)
    assert main(["embed", "-m", "all-MiniLM-L6-v2", "-i", str(texts), "-o", str(tmp_path / "e.txt")]) == 2


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A real (short) supervised SimCSE fit through the CLI."""
    out = tmp_path_factory.mktemp("runs")
    code = main(
        [
            "fit", "quickstart",
            f"output_dir={out}", "name=smoke", "data.max_rows=48", "data.batch_size=16",
            "trainer.max_steps=3", "trainer.enable_progress_bar=false", "trainer.checkpoint_every_n_steps=2",
            "trainer.log_every_n_steps=1", "trainer.max_epochs=5",
            f"eval.sts=[{REPO / 'contrastlib' / 'datasets' / 'stsb' / 'dev.tsv'}]", "optim.lr=1e-4",
        ]
    )
    assert code == 0
    return out / "smoke"


def test_fit_writes_a_complete_run_dir(trained_run):
    run = trained_run
    for rel in ("contrastlib_run.json", "config.yaml", "checkpoints/last.ckpt", "logs/metrics.csv", "model/modules.json", "metrics.json"):
        assert (run / rel).exists(), rel
    assert json.loads((run / "contrastlib_run.json").read_text())["status"] == "finished"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3
    assert set(metrics["before"]) == set(metrics["after"])
    assert list((run / "tensorboard").glob("events.*"))


def test_trained_model_changed_and_reloads_from_run_dir_and_checkpoint(trained_run, minilm, stsb_sentences):
    from contrastlib.loading import load_encoder

    texts = stsb_sentences[:50]
    from_run = load_encoder(trained_run).encode(texts)
    from_ckpt = load_encoder(trained_run / "checkpoints" / "last.ckpt").encode(texts)
    base = minilm.encode(texts)
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


def test_resume_continues_from_last_checkpoint(trained_run, tmp_path):
    import shutil

    run = tmp_path / "runs" / "smoke"
    shutil.copytree(trained_run, run)
    code = main(
        [
            "fit", "quickstart",
            f"output_dir={tmp_path / 'runs'}", "name=smoke", "resume=true", "data.max_rows=48",
            "data.batch_size=16", "trainer.max_steps=5", "trainer.max_epochs=5", "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
            "trainer.checkpoint_every_n_steps=2", "eval.sts=[]",
        ]
    )
    assert code == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 5
    # the first run's log is still there; the resumed run logged beside it
    assert (run / "logs" / "metrics.csv").read_text() == (trained_run / "logs" / "metrics.csv").read_text()
    assert (run / "logs" / "resume-1" / "metrics.csv").is_file()


def test_existing_run_dir_is_never_overwritten(trained_run, tmp_path):
    from contrastlib.jobs import JOB_DIR_ENV, Job

    job = Job.open(trained_run.parent, "smoke", kind="fit")
    with job.running():
        assert job.dir == (trained_run.parent / "smoke-2").resolve()
    assert JOB_DIR_ENV not in __import__("os").environ  # the next job chooses afresh


def test_unsupervised_fit_with_dataloader_workers(tmp_path):
    """Unsupervised SimCSE end to end, tokenising in a DataLoader worker process."""
    from contrastlib.loading import load_encoder

    code = main(
        [
            "fit", "simcse-unsup-wiki",
            f"output_dir={tmp_path}", "name=unsup", "data.max_rows=64", "data.batch_size=16",
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
            "fit", "quickstart", f"output_dir={tmp_path}",
            f"data.train={REPO / 'contrastlib' / 'datasets' / 'wiki' / 'wiki-sentences-3k.txt'}",
        ]
    )
    assert code == 2
    assert "method.mode=unsupervised" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing may be written before the inputs are valid"


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss.name=ati", "loss.temperature=0.1"],
        ["loss.name=info_nce", "loss.chunk_size=4", "loss.symmetric=true"],
        ["method.mode=unsupervised", "loss.name=mv_dhel", "loss.temperature=0.1"],
        ["loss.name=dclw", "loss.temperature=0.1"],
    ],
)
def test_fit_with_other_losses(tmp_path, overrides):
    code = main(
        [
            "fit", "quickstart", f"output_dir={tmp_path}", "name=x",
            "data.max_rows=16", "data.batch_size=8", "trainer.max_steps=1", "trainer.enable_progress_bar=false",
            "eval.sts=[]", "loss.temperature=null", *overrides,
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "x" / "metrics.json").read_text())["steps"] == 1
