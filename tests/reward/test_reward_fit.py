"""The reward method through the CLI: frozen and fine-tuned, export and reload, padding,
the gradient cache, `eval reward` and `score` (killed and resumed).

On the tiny BERT (``tiny_model``): the plumbing is checked against references computed
here, and what a frozen fit learns on preferences its embeddings do show (chosen and
rejected replies in two different styles) is checked against a threshold it must meet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tests_helpers import TINY_DIM

from contrastlib.cli.main import main
from contrastlib.config.load import BUNDLED_DATA_DIR
from contrastlib.heads import BradleyTerryHead
from contrastlib.models.reward import RewardModel

HH_SAMPLE = BUNDLED_DATA_DIR / "hh-rlhf" / "helpful-base-800.jsonl.gz"
COMMON = ["model.max_seq_length=64", "data.max_rows=120", "data.batch_size=16", "trainer.enable_progress_bar=false",
          "data.on_bad_row=skip", "eval.batch_size=64"]


@pytest.fixture
def common(tiny_model: str) -> list[str]:
    """COMMON on the tiny BERT (the bundled HH-RLHF sample, as the recipe)."""
    return [f"model.name={tiny_model}", *COMMON]


_TOPICS = ["the weather", "cooking rice", "a flat tyre", "tax forms", "a sore throat", "learning French",
           "planting tomatoes", "a slow laptop", "saving money", "training a puppy"]


def _styled_preferences(path: Path, n: int = 160) -> Path:
    """``n`` preference pairs whose chosen reply is always a friendly, substantive answer
    and whose rejected reply is always a curt refusal: a difference every encoder's
    embeddings show, so a head trained on them must rank held-out pairs (new prompts)
    nearly perfectly."""
    rows = []
    for i in range(n):
        topic = _TOPICS[i % len(_TOPICS)]
        rows.append({
            "prompt": f"Human: can you help me with {topic}? (question {i})\n\nAssistant:",
            "chosen": f"Of course, happy to help with {topic}! Here are a few clear steps you can follow.",
            "rejected": ["No.", "I won't.", "Figure it out yourself.", "Not my problem."][i % 4],
        })
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Path:
    out = tmp_path_factory.mktemp("reward")
    data = _styled_preferences(out / "styled.jsonl")
    code = main(["fit", "reward-hh", f"output_dir={out}", "trainer.max_epochs=3", f"model.name={tiny_model}",
                 f"data.train={data}", "method.heldout_fraction=0.2", "optim.lr=0.05", *COMMON])
    assert code == 0
    return out / "reward-hh"


def _frozen_args(frozen_run: Path, tiny_model: str) -> list[str]:
    """The arguments frozen_run was fitted with (but the epochs)."""
    return [f"model.name={tiny_model}", f"data.train={frozen_run.parent / 'styled.jsonl'}",
            "method.heldout_fraction=0.2", "optim.lr=0.05", *COMMON]


def test_frozen_fit_writes_a_reward_model_and_held_out_metrics(frozen_run: Path) -> None:
    metrics = json.loads((frozen_run / "metrics.json").read_text())
    for stage in ("before", "after"):
        held = metrics[stage]["heldout"]
        assert 0 <= held["accuracy"] <= 1 and 0 <= held["ece"] <= 1 and held["pairs"] > 5
    # the preference is plain in the embeddings: the trained head ranks the held-out pairs
    # and is sure of it (an untrained head's probability of the chosen reply is ~0.5, and a
    # random head may rank these easy pairs by chance, as the initial one here does)
    before, after = metrics["before"]["heldout"], metrics["after"]["heldout"]
    assert after["accuracy"] >= 0.9, after
    assert before["mean_prob_chosen"] < 0.6 and after["mean_prob_chosen"] >= 0.9, (before, after)
    # and the figure is the held-out pairs' own: recomputed from the saved model
    from contrastlib.data.preference import read_preferences
    from contrastlib.data.prompt_split import split_by_prompt

    model = RewardModel.load(frozen_run)
    rows = read_preferences(frozen_run.parent / "styled.jsonl").rows[:120]  # data.max_rows
    _, held_rows = split_by_prompt(rows, 0.2)
    assert len(held_rows) == metrics["after"]["heldout"]["pairs"]
    chosen = model.fit_texts([r.prompt for r in held_rows], [r.responses[0] for r in held_rows])
    rejected = model.fit_texts([r.prompt for r in held_rows], [r.responses[1] for r in held_rows])
    wins = (model.rewards(chosen) > model.rewards(rejected)).float().mean().item()  # type: ignore[arg-type]
    assert metrics["after"]["heldout"]["accuracy"] == pytest.approx(wins, abs=1e-6)
    spec = json.loads((frozen_run / "model" / "reward_head.json").read_text())
    assert spec["head"] == "bradley_terry" and spec["window_policy"] == "keep_final" and spec["std"] > 0
    # the encoder part loads in sentence-transformers
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(frozen_run / "model"), device="cpu")
    assert st.encode(["hello"]).shape == (1, TINY_DIM)


def test_a_frozen_run_checkpoints_the_head_not_the_encoder_and_resumes(frozen_run: Path, tmp_path: Path,
                                                                      tiny_model: str) -> None:
    """The frozen encoder is the base model: checkpoints hold its fingerprint instead of
    its weights (MiniLM's 90 MB), a resume puts the weights back and continues, and another
    encoder is refused."""
    import shutil

    from contrastlib.errors import ModelLoadError
    from contrastlib.loading import load_encoder_from_checkpoint

    ckpt_path = frozen_run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.startswith("encoder.")]
    assert any(k.startswith("head.") for k in ckpt["state_dict"]) and ckpt["contrastlib_frozen_encoder"]
    encoder_bytes = sum(p.stat().st_size for p in Path(tiny_model).glob("*.safetensors"))
    assert ckpt_path.stat().st_size < min(5_000_000, encoder_bytes // 2)
    with pytest.raises(ModelLoadError, match="frozen"):
        load_encoder_from_checkpoint(ckpt_path)

    out = tmp_path / "out"
    shutil.copytree(frozen_run.parent, out, ignore=shutil.ignore_patterns("again"))
    args = _frozen_args(frozen_run, tiny_model)
    assert main(["fit", "reward-hh", f"output_dir={out}", "resume=true", "trainer.max_epochs=4", *args]) == 0
    steps = json.loads((out / "reward-hh" / "metrics.json").read_text())["steps"]
    assert steps == json.loads((frozen_run / "metrics.json").read_text())["steps"] * 4 // 3
    # another encoder under the same run: refused, not silently trained on
    assert main(["fit", "reward-hh", f"output_dir={out}", "resume=true", "trainer.max_epochs=5", *args,
                 "model.max_seq_length=65"]) != 0


def test_a_second_frozen_run_reads_every_embedding_from_the_cache(frozen_run: Path, tiny_model: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = frozen_run.parent
    assert main(["fit", "reward-hh", f"output_dir={out}", "name=again", "trainer.max_epochs=1",
                 *_frozen_args(frozen_run, tiny_model)]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("embeddings:"))
    reused, total = line.split(", ")[1].split()[0].split("/")
    assert reused == total


def test_reloaded_model_scores_like_the_trained_one_and_padding_never_changes_a_reward(frozen_run: Path) -> None:
    model = RewardModel.load(frozen_run)
    texts = ["Human: hi\n\nAssistant: Hello! How can I help you today?", "Human: hi\n\nAssistant: no.",
             "Human: what is the capital of France?\n\nAssistant: Paris is the capital of France, on the Seine."]
    alone = torch.cat([model.rewards([t]) for t in texts])
    for side in ("right", "left"):
        model.encoder.tokenizer.padding_side = side
        batched = model.rewards(texts)
        assert torch.allclose(batched, alone, atol=1e-5), side
    # the head's weights reloaded exactly: the same reward from the raw parts
    from safetensors.torch import load_file

    head = BradleyTerryHead(TINY_DIM, hidden=256)
    head.load_state_dict(load_file(str(frozen_run / "model" / "reward_head.safetensors")))
    emb = model.encoder.encode(texts[:1], convert_to_numpy=False).clone()
    with torch.no_grad():
        assert torch.allclose(head.eval().reward(emb), alone[:1], atol=1e-6)


@pytest.mark.parametrize("pool", ["reply", "reply_context"])
def test_a_reply_pooled_model_pools_the_reply_after_reload_and_padding_never_changes_a_reward(
    tmp_path: Path, pool: str, common: list[str]
) -> None:
    """``method.pool=reply`` (or ``reply_context``): saved with the model, so a reload
    pools the final reply's tokens (and the context's) as training did, not the whole
    text, alone or in a padded batch."""
    assert main(["fit", "reward-hh", f"output_dir={tmp_path}", f"method.pool={pool}", "trainer.max_epochs=1",
                 *common]) == 0
    run = tmp_path / "reward-hh"
    spec = json.loads((run / "model" / "reward_head.json").read_text())
    assert spec["pool"] == pool and spec["dim"] == (2 * TINY_DIM if pool == "reply_context" else TINY_DIM)
    assert json.loads((run / "metrics.json").read_text())["after"]["heldout"]["pairs"] > 5
    model = RewardModel.load(run)
    prompts = ["Human: hi\n\nAssistant:", "Human: hi\n\nAssistant:", "Human: what is the capital of France?\n\nAssistant:"]
    replies = ["Hello! How can I help you today?", "no.", "Paris is the capital of France, on the Seine."]
    texts = model.fit_texts(prompts, replies)
    assert all(t is not None for t in texts)
    alone = torch.cat([model.rewards([t]) for t in texts])  # type: ignore[list-item]
    for side in ("right", "left"):
        model.encoder.tokenizer.padding_side = side
        assert torch.allclose(model.rewards(texts), alone, atol=1e-5), side  # type: ignore[arg-type]
    model.encoder.tokenizer.padding_side = "right"
    from contrastlib.utils.marks import split_pool_mark

    replies_alone = model.encoder.encode([split_pool_mark(t)[0][split_pool_mark(t)[1]:] for t in texts],  # type: ignore[arg-type,index]
                                         convert_to_numpy=False)
    whole = model.encoder.encode([split_pool_mark(t)[0] for t in texts], convert_to_numpy=False)  # type: ignore[arg-type]
    marked = model.encoder.encode(texts, convert_to_numpy=False, pool_marks=True,  # type: ignore[arg-type]
                                  pool_context=pool == "reply_context")
    with torch.no_grad():
        assert torch.allclose(model.head.eval().reward(marked), alone, atol=1e-6)
    reply_part = marked[:, :TINY_DIM]
    assert (reply_part - whole).abs().max() > 0.05 and (reply_part - replies_alone).abs().max() > 0.01  # reads the context


@pytest.mark.parametrize("pool_context", [False, True])
def test_training_batches_pool_the_reply_as_inference_does(tiny_no_dropout: object, pool_context: bool) -> None:
    """The fine-tuning path (collator -> length-sorted chunks padded to multiples of 8 ->
    encoder) pools the marked reply (and the context) exactly as ``encode`` does at
    scoring time."""
    from contrastlib.data.windows import WindowPolicy
    from contrastlib.methods.reward_batches import RewardTokenize
    from contrastlib.training.gradcache import embed_in_chunks, split_rows
    from contrastlib.utils.marks import strip_pool_mark

    enc: Any = tiny_no_dropout
    policy = WindowPolicy(enc.tokenizer, enc.max_seq_length, mark_reply=True)
    rows = [("Human: hi\n\nAssistant:", "Hello! How can I help?"), ("Human: hi\n\nAssistant:", "no."),
            ("Human: " + "tell me more " * 30 + "\n\nAssistant:", "Sure, here is more."),
            ("", "A reply without a prompt."), ("Human: why?\n\nAssistant:", "word " * 60)]
    texts = [policy.fit(p, r) for p, r in rows]
    assert policy.report.context_cut == 1 and policy.report.reply_cut == 1
    features = RewardTokenize(enc.tokenizer, enc.max_seq_length, "reply_context" if pool_context else "reply")(texts)  # type: ignore[arg-type]
    chunks = split_rows(features, 2, None, pad_to_multiple_of=8, max_width=enc.max_seq_length)
    assert len(chunks) == 3
    enc.eval()
    with torch.no_grad():
        trained = embed_in_chunks(enc, chunks)
    assert trained.shape == (5, TINY_DIM * (2 if pool_context else 1))
    assert torch.allclose(trained, enc.encode(texts, convert_to_numpy=False, pool_marks=True, pool_context=pool_context),
                          atol=1e-5)
    whole = enc.encode([strip_pool_mark(t) for t in texts], convert_to_numpy=False)  # type: ignore[arg-type]
    assert (trained[:, :TINY_DIM] - whole)[:4].abs().amax(dim=1).min() > 0.01


def test_eval_reward_cli_prints_accuracy_ece_and_the_subset_table(frozen_run: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "Human: hi\n\nAssistant:", "chosen": "Hello! How can I help?", "rejected": "no.",
             "subset": "s1" if i % 2 else "s2"} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot = tmp_path / "rel.png"
    assert main(["eval", "reward", "--model", str(frozen_run), "--data", str(data), "--plot", str(plot), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    payload = json.loads(out[-1])
    assert set(payload["subsets"]) == {"s1", "s2"} and "ece" in payload and "section_acc" in payload
    assert any(line.startswith("section-weighted") for line in out)
    assert plot.stat().st_size > 1000


def test_fine_tuned_reward_model_under_the_gradient_cache_equals_one_graph(tmp_path: Path, tiny_model: str) -> None:
    """Fine-tuning with gradcache (chunks of 4) and the auxiliary contrastive loss ends at
    the same encoder and head weights as one graph over the batch of 8, with the reply
    pooled alone (``method.pool=reply``: a pool mask in every chunk; that the chunks
    pool the reply as ``encode`` does is
    ``test_training_batches_pool_the_reply_as_inference_does``). A third run, whose steps
    (learning rate 1e-30) are too small to move a weight, holds the weights both started
    from."""
    runs = {}
    for name, extra in (("plain", ["method.pool=reply"]), ("cached", ["method.pool=reply", "gradcache.chunk_size=4"]),
                        ("start", ["method.pool=reply", "optim.lr=1e-30"])):
        args = ["fit", "reward-hh", f"output_dir={tmp_path}", f"name={name}", "method.frozen=false", f"model.name={tiny_model}",
                "method.aux_weight=0.5", "model.dropout=0.0", "model.max_seq_length=32", "data.max_rows=40",
                "data.batch_size=8", "trainer.max_steps=3", "trainer.precision=32-true", "optim.name=sgd", "optim.lr=0.05",
                "trainer.enable_progress_bar=false", "data.on_bad_row=skip", "method.heldout_fraction=0.0", *extra]
        if name == "start":
            args.remove("optim.lr=0.05")
        assert main(args) == 0
        runs[name] = RewardModel.load(tmp_path / name)
    plain, cached = runs["plain"], runs["cached"]
    for (k, a), (_, b) in zip(plain.head.state_dict().items(), cached.head.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), k
    start = runs["start"].head.state_dict()  # the seeded initial head
    moved = max((plain.head.state_dict()[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-4  # the head trained (its gradients reached it under the cache too)
    pa, pb = dict(plain.encoder.named_parameters()), dict(cached.encoder.named_parameters())
    assert max((pa[k] - pb[k]).abs().max().item() for k in pa) < 1e-5
    from contrastlib.encoders.text import TextEncoder

    base = dict(TextEncoder(tiny_model).named_parameters())
    p0 = dict(runs["start"].encoder.named_parameters())
    assert max((p0[k] - base[k]).abs().max().item() for k in pa) < 1e-12  # the start, unmoved
    assert max((pa[k] - base[k]).abs().max().item() for k in pa) > 1e-4  # the encoder was fine-tuned


def test_frozen_with_gradcache_or_aux_loss_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "reward-hh", "gradcache.chunk_size=4", "--dry-run"]) == 2
    assert "frozen encoder has no gradients" in capsys.readouterr().err
    assert main(["fit", "reward-hh", "method.aux_weight=1", "--dry-run"]) == 2
    assert "method.aux_weight" in capsys.readouterr().err
    assert main(["fit", "reward-hh", "method.head.name=pal", "--dry-run"]) == 2
    assert "no 'user' field" in capsys.readouterr().err
    assert main(["fit", "reward-hh", "method.head.hiden=3", "--dry-run"]) == 2
    assert "method.head.hiden" in capsys.readouterr().err
    assert main(["fit", "reward-hh", "method.pool=answer", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "method.pool: text, reply or reply_context, not 'answer'" in err[-1]
    # [CLS] pooling ignores any mask: pooling the reply would silently be the whole text
    assert main(["fit", "reward-hh", "method.pool=reply", "model.pooling=cls", "data.max_rows=20",
                 "trainer.enable_progress_bar=false"]) == 2
    assert "model.pooling=cls" in capsys.readouterr().err.strip().splitlines()[-1]


def _make_model(tmp_path: Path, tiny_model: str) -> Path:
    from contrastlib.encoders.text import TextEncoder

    torch.manual_seed(0)
    model = RewardModel(TextEncoder(tiny_model, max_seq_length=16), BradleyTerryHead(TINY_DIM), std=2.0)
    return model.save(tmp_path / "model", head_name="bradley_terry", head_kwargs={})


def test_score_killed_and_restarted_has_every_row_exactly_once(tmp_path: Path, tiny_model: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = _make_model(tmp_path, tiny_model)
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": "Q:", "response": f"answer number {i}"}) + "\n"
                           for i in range(10_000)))
    out = tmp_path / "scored.jsonl"
    args = ["score", "--model", str(model_dir), "--input", str(src), "--out", str(out), "--shard-size", "1000",
            "--no-progress", "--precision", "fp32"]
    # the real CLI in its own process (a SIGKILL needs one), each shard slowed down so
    # that the kill lands between shards on any machine
    slow = (
        "import sys, time; import contrastlib.scoring as s; f = s.score_file\n"
        "def slow(*a, **k):\n    k['after_shard'] = lambda i: time.sleep(0.3); return f(*a, **k)\n"
        "s.score_file = slow\nfrom contrastlib.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", slow, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "scored.jsonl.parts"
    deadline = time.monotonic() + 300
    while not (parts / "shard-00001.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-written
    # committed shards: those the manifest lists with their checksum (a kill between a
    # shard's file and the manifest leaves that shard to be scored again)
    done = len(json.loads((parts / "manifest.json").read_text())["shards"])
    assert 1 <= done < 10
    capsys.readouterr()
    assert main([*args, "--json"]) == 0  # restarted in-process: it reads what the killed process left
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["shards_reused"] == done and report["rows"] == 10_000
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(10_000))
    assert not parts.exists()
    # the same rewards as an uninterrupted run
    fresh = tmp_path / "fresh.jsonl"
    assert main(["score", "--model", str(model_dir), "--input", str(src), "--out", str(fresh), "--shard-size",
                 "1000", "--no-progress", "--precision", "fp32"]) == 0
    again = [json.loads(x) for x in fresh.read_text().splitlines()]
    assert max(abs(a["reward"] - b["reward"]) for a, b in zip(rows, again, strict=True)) < 1e-5
    assert abs(rows[0]["reward_normalized"] - rows[0]["reward"] / 2.0) < 1e-6


def test_score_bad_row_is_one_line_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    assert main(["score", "--model", str(tmp_path / "missing"), "--input", str(src), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {src}:2: 'response' missing"


def test_score_skips_and_counts_bad_rows_when_asked(frozen_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    good = [{"prompt": "q", "response": f"answer {i}"} for i in range(4)]
    src = tmp_path / "rows.jsonl"
    lines = [json.dumps(good[0]), "{not json", json.dumps(good[1]), json.dumps({"prompt": "q", "response": " "}),
             json.dumps(good[2]), json.dumps(good[3])]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.jsonl"
    assert main(["score", "--model", str(frozen_run), "--input", str(src), "--out", str(out), "--no-progress",
                 "--on-bad-row", "skip", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["bad_rows_skipped"] == 2
    assert f"{src}: 2 bad rows skipped: " in captured.err and f"first at {src}:2: invalid JSON" in captured.err
    assert [r["response"] for r in map(json.loads, out.read_text().splitlines())] == [g["response"] for g in good]


def test_the_head_trains_in_training_mode_after_the_evaluation_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, common: list[str]
) -> None:
    """Evaluating before training puts the head in eval mode; a head with dropout would
    then train with dropout off. Every training step must see it in training mode."""
    from contrastlib.methods.reward import RewardMethod

    modes: list[bool] = []
    contrast = RewardMethod.contrast

    def spy(self: RewardMethod, embeddings: list[torch.Tensor], batch: object) -> torch.Tensor:
        modes.append(self.head.training)
        return contrast(self, embeddings, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(RewardMethod, "contrast", spy)
    assert main(["fit", "reward-hh", f"output_dir={tmp_path}", "trainer.max_epochs=2", *common,
                 "method.heldout_fraction=0.2", "method.head={name: bradley_terry, hidden: 16, dropout: 0.1}"]) == 0
    assert modes and all(modes)


def test_scoring_uses_eval_mode_and_gives_the_head_back_in_its_own_mode(tiny_no_dropout: Any) -> None:
    """``rewards`` and ``prefer`` score with the head's dropout off, and leave the head in
    the mode they found it in: scoring before training used to leave it in eval mode, and
    Lightning warned "Found 6 module(s) in eval mode at the start of training"."""
    torch.manual_seed(0)
    model = RewardModel(tiny_no_dropout, BradleyTerryHead(TINY_DIM, hidden=16, dropout=0.5))
    texts = ["Human: hi\n\nAssistant: Hello! How can I help?", "Human: hi\n\nAssistant: no."]
    for mode in (True, False):
        model.head.train(mode)
        first, again = model.rewards(texts), model.rewards(texts)
        assert torch.equal(first, again)  # dropout off while scoring, in either mode
        assert model.head.training is mode and all(m.training is mode for m in model.head.modules())
        model.prefer(texts[:1], texts[1:])
        assert model.head.training is mode


def test_a_damaged_score_shard_is_scored_again(tmp_path: Path, tiny_model: str) -> None:
    from contrastlib.scoring import score_file

    model = RewardModel.load(_make_model(tmp_path, tiny_model), precision="fp32")
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": "Q:", "response": f"reply {i}"}) + "\n" for i in range(30)))
    out = tmp_path / "out.jsonl"

    def stop_after_two(s: int) -> None:
        if s == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_file(model, src, out, model_fp="m", shard_size=10, show_progress_bar=False, after_shard=stop_after_two)
    shard = tmp_path / "out.jsonl.parts" / "shard-00000.jsonl"
    shard.write_text(shard.read_text().replace('"id": 3,', '"id": 33,'))  # damaged, still valid JSON
    report = score_file(model, src, out, model_fp="m", shard_size=10, show_progress_bar=False)
    assert report.shards_reused == 1  # shard 1 only: shard 0 failed its checksum
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == list(range(30))
