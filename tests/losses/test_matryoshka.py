"""Matryoshka around an embedding loss: the weighted sum of per-dimension losses written
out by hand, sentence-transformers' MatryoshkaLoss on the same embeddings, one dimension's
graph at a time, and the config key."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from contrastlib.cli.main import main
from contrastlib.losses import ATILoss, InfoNCELoss
from contrastlib.losses.matryoshka import MatryoshkaLoss

DIMS, WEIGHTS = [64, 32, 16, 8], [1.0, 0.5, 2.0, 1.0]


def _emb(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_()


def _grads(loss, *xs):
    return torch.autograd.grad(loss, xs)


def test_equals_the_weighted_sum_written_out_by_hand():
    a, c = _emb(8, 64, 1), _emb(16, 64, 2)  # 8 positives, then 8 hard negatives
    ours = MatryoshkaLoss(InfoNCELoss(0.05), DIMS, WEIGHTS)(a, c)
    by_hand = sum(w * InfoNCELoss(0.05)(F.normalize(a[:, :d], dim=-1), F.normalize(c[:, :d], dim=-1))
                  for d, w in zip(DIMS, WEIGHTS, strict=True))
    assert ours.item() == pytest.approx(by_hand.item(), abs=1e-6)
    for g, h in zip(_grads(ours, a, c), _grads(by_hand, a, c), strict=True):
        torch.testing.assert_close(g, h, atol=1e-6, rtol=0)


def test_equals_sentence_transformers_matryoshka_around_mnrl():
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    a, p, n = _emb(8, 64, 3), _emb(8, 64, 4), _emb(8, 64, 5)
    columns = [a.float(), p.float(), n.float()]

    class Embeddings(torch.nn.Module):  # a model whose "forward" returns the given embeddings
        def forward(self, features):
            return {"sentence_embedding": columns[int(features["column"])]}

        def get_embedding_dimension(self):
            return 64

    model = Embeddings()
    peer = losses.MatryoshkaLoss(model, losses.MultipleNegativesRankingLoss(model, scale=20.0), DIMS, WEIGHTS)
    theirs = peer([{"column": torch.tensor(i)} for i in range(3)], torch.zeros(8))
    ours = MatryoshkaLoss(InfoNCELoss(0.05), DIMS, WEIGHTS)(columns[0], torch.cat(columns[1:]))
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    for g, h in zip(_grads(ours, *columns[:1], *columns[1:]), _grads(theirs, *columns), strict=True):
        torch.testing.assert_close(g, h, atol=1e-5, rtol=1e-4)


def test_one_dimension_s_graph_at_a_time():
    """After the forward pass the graph holds the summed gradients (the embeddings' size),
    not every dimension's logits: what is saved for backward does not grow with the dims."""
    def saved_bytes(loss_fn, a, c):
        """Bytes the graph holds for backward once the forward pass is done (the inputs aside)."""
        packed = []

        def pack(t):
            packed.append((weakref.ref(t), t.numel() * t.element_size()))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(a, c)
        gc.collect()
        alive = sum(n for ref, n in packed if (t := ref()) is not None and t is not a and t is not c)
        loss.backward()
        return alive

    a, c = _emb(256, 64, 6), _emb(256, 64, 7)
    few = saved_bytes(MatryoshkaLoss(InfoNCELoss(0.05), [64]), a, c)
    many = saved_bytes(MatryoshkaLoss(InfoNCELoss(0.05), [64, 56, 48, 40, 32, 24, 16, 8]), a, c)
    naive = saved_bytes(lambda a, c: sum(InfoNCELoss(0.05)(F.normalize(a[:, :d], dim=-1), F.normalize(c[:, :d], dim=-1))
                                         for d in [64, 56, 48, 40, 32, 24, 16, 8]), a, c)
    assert many == few == 2 * 256 * 64 * 8  # the two embeddings' gradients, float64
    assert naive > 8 * many  # every dimension's 256 x 256 logits and more


def test_a_loss_with_per_example_state_is_refused():
    """ATI updates its moving averages and temperatures once per step: computed once per
    size it would step them len(dims) times (found in review)."""
    with pytest.raises(ValueError, match="ATILoss keeps per-example state it updates once per step"):
        MatryoshkaLoss(ATILoss(num_samples=8, temperature=0.05), [32, 16])


@pytest.mark.parametrize(("value", "match"), [
    ("{dims: [64, 0]}", r"loss\.matryoshka\.dims: every size must be an integer >= 1"),
    ("{dims: [64, 32], weights: [1]}", r"loss\.matryoshka\.weights: one per dimension \(2\)"),
    ("{sizes: [64]}", r"loss\.matryoshka: a mapping \{dims"),
])
def test_bad_settings_are_one_line_errors_before_any_model_loads(value, match, capsys):
    code = main(["fit", "simcse-snli", f"loss.matryoshka={value}", "model.name=/nonexistent/model", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    import re

    assert re.search(match, err[0]), err[0]


def test_a_fit_with_matryoshka_and_the_gradient_cache_equals_one_without(tmp_path, tiny_model):
    """Through the CLI, fp32, dropout off: the cached fit (chunks of 4) ends at the plain
    fit's weights; a size over the encoder's is refused before training."""
    from safetensors.torch import load_file

    common = ["fit", "simcse-snli", f"output_dir={tmp_path}", f"model.name={tiny_model}", "data.max_rows=16",
              "data.batch_size=8", "trainer.max_steps=2", "trainer.precision=32-true", "eval.sts=[]",
              "model.max_seq_length=24", "trainer.enable_progress_bar=false", "model.dropout=0.0",
              # SGD: AdamW's step is the gradient's sign where it is ~0 (attention key biases,
              # whose exact gradient is 0), so float noise there would move weights by lr
              "optim.name=sgd", "optim.lr=0.5", "optim.momentum=0.0",
              "loss.matryoshka={dims: [32, 16, 8], weights: [1, 1, 2]}"]
    assert main([*common, "name=plain"]) == 0
    assert main([*common, "name=cached", "gradcache.chunk_size=4"]) == 0
    a = load_file(str(next((tmp_path / "plain" / "model").rglob("model.safetensors"))))
    b = load_file(str(next((tmp_path / "cached" / "model").rglob("model.safetensors"))))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=k)
    start = load_file(str(next(Path(tiny_model).rglob("model.safetensors"))))
    moved = max(float((a[k] - start[k]).abs().max()) for k in a if k in start)
    assert moved > 1e-3  # the two steps moved the weights far more than the tolerance
    hparams = (tmp_path / "plain" / "checkpoints").glob("*.ckpt")
    state = torch.load(next(hparams), weights_only=True, map_location="cpu")
    assert state["hyper_parameters"]["loss"]["matryoshka"] == {"dims": [32, 16, 8], "weights": [1.0, 1.0, 2.0]}
    assert main([*common, "name=too-wide", "loss.matryoshka={dims: [4096, 16]}"]) == 2


def test_evaluations_report_every_size_and_the_export_records_them(tmp_path, tiny_model, capsys):
    """The fit's STS evaluation reports each size; the exported model names them (and
    sentence-transformers still loads it); ``eval sts`` on the run reports them;
    ``embed --dim 16`` is the first 16 dimensions renormalised, as sentence-transformers'
    ``truncate_dim`` gives them."""
    import json

    import numpy as np
    from sentence_transformers import SentenceTransformer
    from tests_helpers import SMALL_STS

    sts = tmp_path / "sts.tsv"
    sts.write_text(SMALL_STS)
    assert main(["fit", "simcse-snli", f"output_dir={tmp_path}", "name=m", f"model.name={tiny_model}",
                 "data.max_rows=16", "data.batch_size=8", "trainer.max_steps=1", "model.max_seq_length=24",
                 "trainer.enable_progress_bar=false", f"eval.sts=[{sts}]",
                 "loss.matryoshka={dims: [32, 16]}"]) == 0
    after = json.loads((tmp_path / "m" / "metrics.json").read_text())["after"]
    scores = next(iter(after.values()))
    assert {"spearman", "spearman@32", "spearman@16"} <= set(scores)
    assert scores["spearman@32"] == pytest.approx(scores["spearman"])  # 32 is the tiny BERT's whole width
    model = tmp_path / "m" / "model"
    assert json.loads((model / "config_sentence_transformers.json").read_text())["matryoshka_dims"] == [32, 16]
    from contrastlib.loading import load_encoder_from_checkpoint

    assert load_encoder_from_checkpoint(tmp_path / "m" / "checkpoints" / "last.ckpt").matryoshka_dims == (32, 16)
    capsys.readouterr()
    assert main(["eval", "sts", "--model", str(model), "--data", str(sts), "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["spearman_by_dim"]["16"] == pytest.approx(scores["spearman@16"], abs=1e-3)

    texts = tmp_path / "texts.txt"
    texts.write_text("a cat sat on the mat\nthe stock market fell\nrain is expected tomorrow\n")
    assert main(["embed", "--model", str(model), "--input", str(texts), "--out", str(tmp_path / "e16.npy"),
                 "--dim", "16", "--no-progress"]) == 0
    ours = np.load(tmp_path / "e16.npy")
    theirs = SentenceTransformer(str(model), device="cpu", truncate_dim=16).encode(texts.read_text().splitlines())
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    assert ours.shape == (3, 16)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert main(["embed", "--model", str(model), "--input", str(texts), "--out", str(tmp_path / "x.npy"),
                 "--dim", "64"]) == 2


def test_half_precision_embeddings_get_float32_gradients_cast_back():
    """fp16 embeddings (16-mixed): the sizes' gradients are summed in float32 and cast to
    fp16 once, as plain autograd through the inner losses' float32 upcast does."""
    a32, c32 = _emb(8, 64, 10).detach().float(), _emb(8, 64, 11).detach().float()
    a, c = (a32 * 1e-3).half().requires_grad_(), (c32 * 1e-3).half().requires_grad_()
    ours = MatryoshkaLoss(InfoNCELoss(0.05), DIMS, WEIGHTS)(a, c)
    by_hand = sum(w * InfoNCELoss(0.05)(F.normalize(a[:, :d].float(), dim=-1), F.normalize(c[:, :d].float(), dim=-1))
                  for d, w in zip(DIMS, WEIGHTS, strict=True))
    g, h = _grads(ours, a, c), _grads(by_hand, a, c)
    assert all(x.dtype == torch.float16 for x in g)
    for x, y in zip(g, h, strict=True):
        torch.testing.assert_close(x, y, atol=1e-2, rtol=1e-2)


def test_eval_retrieval_reports_every_size_as_the_cut_embeddings_search(tmp_path, tiny_model, capsys):
    """``eval retrieval`` on a Matryoshka model: nDCG@10 at each trained size, equal to the
    full pipeline run on the embeddings cut to that size and renormalised by hand."""
    import json

    import numpy as np

    from contrastlib.encoders import TextEncoder
    from contrastlib.evaluation.retrieval import evaluate_retrieval, read_beir

    enc = TextEncoder(tiny_model)
    enc.matryoshka_dims = (32, 8)
    enc.save(tmp_path / "model")
    docs = [f"document {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain", "stocks", "bread", "music"] * 3)]
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(docs)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"about {w}"}) + "\n"
                                                for i, w in enumerate(["cats", "rain", "bread", "music"])))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{q}\td{d}\t1\n" for q, d in [(0, 0), (0, 6), (1, 2), (2, 4), (2, 10), (3, 5)]))
    capsys.readouterr()
    assert main(["eval", "retrieval", "--model", str(tmp_path / "model"), "--data", str(root), "--json",
                 "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    class Cut:
        def encode(self, texts, **kw):
            x = enc.encode(texts, **kw)[:, :8]
            return x / np.linalg.norm(x, axis=1, keepdims=True)

    by_hand = evaluate_retrieval(Cut(), read_beir(root, "test")).metrics["ndcg@10"]
    assert out["ndcg@10[8]"] == pytest.approx(100 * by_hand, abs=1e-6)
    assert "ndcg@10[32]" not in out  # the whole width is the plain score
