"""Prompts: training with ``data.prompts`` equals training on the texts with the prompts
written in by hand; the export carries them under sentence-transformers' names, and
sentence-transformers' ``prompt_name`` / ``encode_query`` embed as ``contrastlib embed``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from contrastlib.cli.main import main

ROWS = [(f"anchor text number {i}", f"positive passage {i}", f"negative passage {i}") for i in range(24)]
PROMPTS = {"anchor": "query: ", "positive": "passage: ", "negative": "passage: "}


def _write(path, rows):
    path.write_text("anchor\tpositive\tnegative\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _weights(run):
    return load_file(str(next((run / "model").rglob("model.safetensors"))))


@pytest.fixture(scope="module")
def prompted_runs(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("prompts")
    plain = _write(out / "plain.tsv", ROWS)
    by_hand = _write(out / "by-hand.tsv", [(PROMPTS["anchor"] + a, PROMPTS["positive"] + p, PROMPTS["negative"] + n)
                                           for a, p, n in ROWS])
    common = ["fit", "simcse-snli", f"output_dir={out}", f"model.name={tiny_model}", "data.batch_size=8",
              "data.sampler=random", "trainer.max_steps=3", "trainer.precision=32-true", "eval.sts=[]",
              "model.max_seq_length=32", "trainer.enable_progress_bar=false", "optim.lr=1e-3"]
    prompts = "data.prompts={anchor: 'query: ', positive: 'passage: ', negative: 'passage: '}"
    assert main([*common, "name=prompted", f"data.train={plain}", prompts]) == 0
    assert main([*common, "name=by-hand", f"data.train={by_hand}"]) == 0
    # sentence-transformers' Pooling(include_prompt=False): the prompts' tokens are not pooled
    assert main([*common, "name=no-include", f"data.train={plain}", prompts, "model.include_prompt=false"]) == 0
    return out


def test_training_with_prompts_equals_the_prompts_written_in(prompted_runs):
    a, b = _weights(prompted_runs / "prompted"), _weights(prompted_runs / "by-hand")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("run", ["prompted", "no-include"])
def test_the_export_embeds_with_its_prompts_as_sentence_transformers_does(prompted_runs, tmp_path, capsys, run):
    from sentence_transformers import SentenceTransformer

    model = prompted_runs / run / "model"
    pooling = json.loads((model / "1_Pooling" / "config.json").read_text())
    assert pooling["include_prompt"] == (run == "prompted")
    config = json.loads((model / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: "}
    assert config["default_prompt_name"] is None
    texts = ["how do magnets work", "the capital of france", "a recipe for bread"]
    (tmp_path / "q.txt").write_text("\n".join(texts) + "\n")
    assert main(["embed", "--model", str(model), "--input", str(tmp_path / "q.txt"), "--out", str(tmp_path / "q.npy"),
                 "--prompt-name", "query", "--no-progress"]) == 0
    assert main(["embed", "--model", str(model), "--input", str(tmp_path / "q.txt"), "--out", str(tmp_path / "p.npy"),
                 "--prompt", "query: ", "--no-progress"]) == 0
    ours, given = np.load(tmp_path / "q.npy"), np.load(tmp_path / "p.npy")
    np.testing.assert_array_equal(ours, given)
    # the run's checkpoint knows its prompts too (embed / eval on a .ckpt)
    assert main(["embed", "--model", str(prompted_runs / run / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "q.txt"), "--out", str(tmp_path / "c.npy"), "--prompt-name", "query", "--no-progress"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), ours, atol=1e-5)
    st = SentenceTransformer(str(model), device="cpu")
    for theirs in (st.encode(texts, prompt_name="query"), st.encode_query(texts)):
        cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cos.min() >= 0.99999 and np.abs(ours - theirs).max() < 1e-5
    plain = st.encode(texts)  # and the prompt matters: without it the embeddings differ
    assert np.abs(ours - plain).max() > 1e-3
    if run == "no-include":  # the prompt's tokens are left out of the pool, not in it
        from contrastlib.data.prompts import with_prompt
        from contrastlib.encoders import TextEncoder

        pooled_in = TextEncoder(str(model), include_prompt=True).encode(with_prompt(texts, "query: "))
        assert np.abs(ours - pooled_in).max() > 1e-3
    capsys.readouterr()
    assert main(["embed", "--model", str(model), "--input", str(tmp_path / "q.txt"), "--out", str(tmp_path / "x.npy"),
                 "--prompt-name", "title"]) == 2
    assert "names no prompt 'title'; it has: query, document" in capsys.readouterr().err


@pytest.mark.parametrize(("overrides", "match"), [
    (["data.prompts={question: 'q: '}"], "data.prompts: unknown role 'question'; roles: anchor, positive, negative"),
    (["data.prompts={anchor: 3}"], "data.prompts.anchor: a prompt is a string, got 3"),
])
def test_bad_prompts_are_one_line_errors(overrides, match, capsys):
    code = main(["fit", "simcse-snli", *overrides, "model.name=/nonexistent/model", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and match in err[0], err


def test_evaluations_apply_prompts(prompted_runs, tmp_path, capsys):
    """``eval retrieval --query-prompt/--document-prompt`` scores what the same set with the
    prompts written into its files scores; during a fit, the evaluations use the prompts
    the model trains with (STS: the query prompt on both sides)."""
    from contrastlib.data.readers import ScoredPairs
    from contrastlib.encoders import TextEncoder
    from contrastlib.evaluation.sts import STSEvaluator, evaluate_sts

    model = prompted_runs / "prompted" / "model"
    docs = {f"d{i}": f"document about topic {i} and its details" for i in range(6)}
    queries = {f"q{i}": f"what about topic {i}" for i in range(3)}

    def beir(root, qp="", dp=""):
        (root / "qrels").mkdir(parents=True)
        (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": dp + v}) + "\n" for k, v in docs.items()))
        (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": qp + v}) + "\n" for k, v in queries.items()))
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
        return root

    def ndcg(*args):
        capsys.readouterr()
        assert main(["eval", "retrieval", "--model", str(model), "--json", "--no-progress", *args]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    flags = ndcg("--data", str(beir(tmp_path / "plain")), "--query-prompt", "query: ", "--document-prompt", "passage: ")
    written = ndcg("--data", str(beir(tmp_path / "written", "query: ", "passage: ")))
    assert {k: v for k, v in flags.items() if k != "data"} == {k: v for k, v in written.items() if k != "data"}

    encoder = TextEncoder(str(model))
    pairs = ScoredPairs(["a cat sits", "a dog runs", "rain falls"], ["a cat is sitting", "the dog is running", "sun shines"],
                        [5.0, 4.0, 0.5], [""] * 3)
    during_fit = STSEvaluator("pairs", pairs)(encoder)
    prompted = ScoredPairs([f"query: {s}" for s in pairs.sentences1], [f"query: {s}" for s in pairs.sentences2],
                           pairs.scores, pairs.sources)
    assert during_fit["spearman"] == pytest.approx(evaluate_sts(encoder, prompted).spearman)
    assert during_fit["pearson"] == pytest.approx(evaluate_sts(encoder, prompted).pearson)
    assert during_fit["pearson"] != pytest.approx(evaluate_sts(encoder, pairs).pearson)


def test_a_base_model_s_prompts_are_not_exported_unless_the_run_trains_with_them(tmp_path, tiny_model):
    """Fine-tuning a model whose export names prompts, without data.prompts: the run's
    evaluations and its export carry no prompt it did not train with (found in review)."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    path = base / "config_sentence_transformers.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config.update(prompts={"query": "q: "}, default_prompt_name="query")
    (base / "config_sentence_transformers.json").write_text(json.dumps(config))
    train = _write(tmp_path / "t.tsv", ROWS[:8])
    assert main(["fit", "simcse-snli", f"output_dir={tmp_path}", "name=r", f"model.name={base}", f"data.train={train}",
                 "data.batch_size=8", "trainer.max_steps=1", "eval.sts=[]", "trainer.enable_progress_bar=false"]) == 0
    exported = json.loads((tmp_path / "r" / "model" / "config_sentence_transformers.json").read_text())
    assert exported["prompts"] == {} and exported["default_prompt_name"] is None
    # nor does its checkpoint (found in review)
    from contrastlib.loading import load_encoder_from_checkpoint

    loaded = load_encoder_from_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")
    assert dict(loaded.prompts) == {} and loaded.default_prompt_name is None


@pytest.mark.parametrize(("pooling", "prompt"), [("mean", "query: "), ("cls", "query: "),
                                                  ("mean", "a prompt far longer than the window " * 3)])
def test_include_prompt_false_pools_as_sentence_transformers(tmp_path, tiny_model, pooling, prompt):
    """Pooling(include_prompt=False) as sentence-transformers 6 computes it: the prompt's
    length less a trailing special token, CLS as the first token after the prompt, a prompt
    longer than the window cut to it (the last-but-one found in review)."""
    from sentence_transformers import SentenceTransformer

    from contrastlib.data.prompts import with_prompt
    from contrastlib.encoders import TextEncoder

    enc = TextEncoder(tiny_model, pooling=pooling, include_prompt=False, max_seq_length=16)
    enc.prompts = {"query": prompt}
    enc.save(tmp_path / "m")
    texts = ["how do magnets work", "the capital of france is paris, a city on the seine", "bread"]
    ours = enc.encode(with_prompt(texts, prompt))
    theirs = SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(texts, prompt_name="query")
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_the_prompt_length_drops_only_a_trailing_special_token():
    from contrastlib.data.prompts import prompt_length

    class StartOnly:  # a tokenizer that adds only a start token (Mistral-style)
        all_special_ids = (1,)

        def __call__(self, text, truncation=False, max_length=None):
            ids = [1, *range(10, 10 + len(text.split()))]
            return {"input_ids": ids[:max_length] if truncation else ids}

    assert prompt_length(StartOnly(), "Instruct: find it") == 4  # <s> and 3 words, nothing dropped
    assert prompt_length(StartOnly(), "Instruct: find it", max_length=2) == 2
