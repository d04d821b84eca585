"""Gradient cache: exact with dropout (a BERT: the tiny one, same architecture type as
MiniLM; what is checked is an equivalence, not a figure), RNG, BatchNorm, token budgets,
Lightning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastlib.data import TextBatch
from contrastlib.encoders import TextEncoder
from contrastlib.losses import InfoNCELoss
from contrastlib.methods import SimCSE
from contrastlib.training.gradcache import GradCache, embed_in_chunks, split_rows

REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "A man is playing a guitar.", "Two dogs run through a field of tall grass.", "A woman slices onions.",
    "Children are playing soccer in the park on a sunny afternoon.", "The cat sleeps.", "A chef cooks pasta.",
    "Someone is riding a red bicycle down a steep hill.", "Rain falls on the city.",
]


@pytest.fixture
def encoder(tiny_model):
    enc = TextEncoder(tiny_model, max_seq_length=32)
    enc.train()  # dropout on
    return enc


def grads_of(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def reference_grads(method: SimCSE, batch: TextBatch, chunk_size: int, seed: int):
    """The same chunked forwards kept in one graph, one backward: what caching must equal."""
    method.zero_grad()
    torch.manual_seed(seed)
    embs = [embed_in_chunks(method.encoder, split_rows(v, chunk_size, None)) for v in method.views(batch)]
    loss = method.contrast(embs, batch)
    loss.backward()
    return loss.detach(), grads_of(method), torch.get_rng_state()


def cached_grads(method: SimCSE, batch: TextBatch, cache: GradCache, seed: int):
    method.zero_grad()
    torch.manual_seed(seed)
    loss = cache.step(method.encoder, method.views(batch), lambda e: method.contrast(e, batch),
                      extra_params=list(method.loss_fn.parameters()))
    return loss, grads_of(method), torch.get_rng_state()


@pytest.mark.parametrize("mode", ["supervised", "unsupervised"])
@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_cached_gradients_equal_full_graph_with_dropout(encoder, mode, chunk_size):
    method = SimCSE(encoder, InfoNCELoss(0.05), mode=mode)
    columns = [TEXTS, TEXTS[1:] + TEXTS[:1], TEXTS[::-1]] if mode == "supervised" else [TEXTS]
    batch = TextBatch([encoder.tokenize(c) for c in columns], torch.arange(len(TEXTS)))
    ref_loss, ref, ref_rng = reference_grads(method, batch, chunk_size, seed=7)
    cache = GradCache(chunk_size, record=True)
    loss, ours, rng = cached_grads(method, batch, cache, seed=7)
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # both passes saw identical embeddings (dropout masks replayed)
    stats = cache.last_stats
    assert stats is not None
    for first, second in zip(stats.first_pass, stats.second_pass, strict=True):
        for x, y in zip(first, second, strict=True):
            torch.testing.assert_close(x, y, atol=0, rtol=0)
    # the global random state ends where plain forwards leave it
    assert torch.equal(rng, ref_rng)


def test_chunk_as_large_as_the_batch_is_plain_full_batch_training(encoder):
    method = SimCSE(encoder, InfoNCELoss(0.05), mode="unsupervised")
    batch = TextBatch([encoder.tokenize(TEXTS)], torch.arange(len(TEXTS)))
    method.zero_grad()
    torch.manual_seed(3)
    plain = method.contrast([method.encoder(v) for v in method.views(batch)], batch)
    plain.backward()
    ref = grads_of(method)
    _, ours, _ = cached_grads(method, batch, GradCache(len(TEXTS) * 2), seed=3)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_learnable_temperature_gradient_is_cached_too(encoder):
    method = SimCSE(encoder, InfoNCELoss(0.05, learnable_temperature=True), mode="supervised")
    batch = TextBatch([encoder.tokenize(c) for c in (TEXTS, TEXTS[::-1])], torch.arange(len(TEXTS)))
    reference_grads(method, batch, 3, seed=1)
    ref = method.loss_fn.temperature.log_scale.grad.clone()
    cached_grads(method, batch, GradCache(3), seed=1)
    torch.testing.assert_close(method.loss_fn.temperature.log_scale.grad, ref, atol=1e-6, rtol=1e-5)


def test_token_budget_chunks_fit_and_keep_embeddings(encoder):
    feats = encoder.tokenize(TEXTS)
    chunks = split_rows(feats, None, 40)
    assert sorted(torch.cat([i for i, _ in chunks]).tolist()) == list(range(len(TEXTS)))
    for _, c in chunks:
        assert c["input_ids"].shape[0] == 1 or c["input_ids"].numel() <= 40
    # grouped by length: far less padding than the batch as a whole
    padded = sum(c["input_ids"].numel() for _, c in split_rows(feats, 2, None))
    assert padded < feats["input_ids"].numel()
    encoder.eval()
    try:
        with torch.no_grad():
            whole = encoder(feats)
            parts = embed_in_chunks(encoder, chunks)
        torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-4)
    finally:
        encoder.train()


def test_pad_to_multiple_of_rounds_widths_and_keeps_embeddings(encoder):
    feats = encoder.tokenize(TEXTS)  # padded to the longest text
    full = feats["input_ids"].shape[1]
    window = encoder.max_seq_length  # 32
    exact = split_rows(feats, 2, None)
    rounded = split_rows(feats, 2, None, pad_to_multiple_of=8, max_width=window)
    widths = [c["input_ids"].shape[1] for _, c in exact]
    assert len(set(widths)) > 2 and full % 8 != 0  # the texts differ in length, the longest is no multiple of 8
    for (i, a), (j, b), w in zip(exact, rounded, widths, strict=True):
        assert torch.equal(i, j)
        # every group rounded up, the widest too (past the batch's width, within the window)
        assert b["input_ids"].shape[1] == min(-(-w // 8) * 8, window)
        assert int(b["attention_mask"].sum()) == int(a["attention_mask"].sum())  # only masked padding added
    assert rounded[0][1]["input_ids"].shape[1] > full
    # without a window the batch's own width is the cap
    assert split_rows(feats, 2, None, pad_to_multiple_of=8)[0][1]["input_ids"].shape[1] == full
    # one chunk (the whole batch) is rounded too, but never past the window
    (_, one), = split_rows(feats, None, None, pad_to_multiple_of=64, max_width=window)
    assert one["input_ids"].shape[1] == window
    # a batch padded to the window is cut back to its rounded longest row
    wide = encoder.tokenizer(TEXTS, padding="max_length", truncation=True, max_length=window, return_tensors="pt")
    (_, cut), = split_rows(dict(wide), None, None, pad_to_multiple_of=8, max_width=window)
    assert cut["input_ids"].shape[1] == -(-full // 8) * 8 < window
    # a token budget counts the rounded width
    for _, c in split_rows(feats, None, 48, pad_to_multiple_of=16, max_width=window):
        assert c["input_ids"].shape[0] == 1 or c["input_ids"].numel() <= 48
    encoder.eval()
    try:
        with torch.no_grad():
            whole = encoder(feats)
            torch.testing.assert_close(embed_in_chunks(encoder, rounded), whole, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(encoder(one), whole, atol=1e-5, rtol=1e-4)
    finally:
        encoder.train()


class _TinyBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_batchnorm_running_stats_come_from_the_first_pass_only():
    torch.manual_seed(0)
    model = _TinyBN()
    x = torch.randn(12, 4)
    GradCache._warned_batchnorm = False
    expected = _TinyBN()
    expected.load_state_dict(model.state_dict())
    with torch.no_grad():
        for c in x.split(4):
            expected(c)  # pass 1 alone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GradCache(4).step(model, [x], lambda e: (e[0] ** 2).mean())
    assert any("not full-batch BatchNorm" in str(w.message) for w in caught)
    bn, ref_bn = model.net[1], expected.net[1]
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    assert int(bn.num_batches_tracked) == 3


def test_invalid_settings():
    with pytest.raises(ValueError, match="chunk_size or token_budget"):
        GradCache()
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        GradCache(0)


def _fit(tmp_path: Path, model: str, name: str, *extra: str) -> Path:
    from contrastlib.cli.main import main

    code = main([
        "fit", "simcse-snli", f"output_dir={tmp_path}", f"name={name}", f"model.name={model}",
        "data.max_rows=16", "data.batch_size=8", "trainer.max_steps=2", "trainer.enable_progress_bar=false",
        "eval.sts=[]", "model.max_seq_length=32", "optim.lr=1e-4", "trainer.precision=32-true", *extra,
    ])
    assert code == 0
    return tmp_path / name


def test_lightning_cached_step_equals_plain_step(tmp_path, tiny_model):
    """Chunk = batch: the cached Lightning run (manual optimisation) takes the same two
    optimizer steps as the plain run (automatic optimisation). Dropout is on, so both must
    draw the same masks: one forward per view on both sides (no pooled length grouping)."""
    from safetensors.torch import load_file

    plain = _fit(tmp_path, tiny_model, "plain", "trainer.length_group_rows=null")
    cached = _fit(tmp_path, tiny_model, "cached", "gradcache.chunk_size=8", "trainer.length_group_rows=null")
    a = load_file(str(plain / "model" / "model.safetensors"))
    b = load_file(str(cached / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    assert json.loads((cached / "metrics.json").read_text())["steps"] == 2


def test_lightning_cached_with_accumulation_clipping_and_resume(tmp_path, tiny_model):
    run = _fit(tmp_path, tiny_model, "acc", "gradcache.token_budget=64", "trainer.accumulate_grad_batches=2",
               "trainer.gradient_clip_val=1.0", "trainer.max_epochs=4")
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2
    from contrastlib.cli.main import main

    code = main([
        "fit", "simcse-snli", f"output_dir={tmp_path}", "name=acc", "resume=true", f"model.name={tiny_model}",
        "data.max_rows=16", "data.batch_size=8", "trainer.max_steps=3", "trainer.max_epochs=4",
        "trainer.enable_progress_bar=false", "eval.sts=[]", "model.max_seq_length=32", "gradcache.token_budget=64",
        "trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=1.0",
    ])
    assert code == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3


def test_composes_with_chunked_info_nce(encoder):
    method = SimCSE(encoder, InfoNCELoss(0.05, chunk_size=3, symmetric=True), mode="supervised")
    batch = TextBatch([encoder.tokenize(c) for c in (TEXTS, TEXTS[::-1])], torch.arange(len(TEXTS)))
    ref_loss, ref, _ = reference_grads(method, batch, 3, seed=11)
    loss, ours, _ = cached_grads(method, batch, GradCache(3), seed=11)
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_is_the_same_in_both_passes(encoder):
    """Under autocast both passes run in bf16: the replayed embeddings are bit-identical and
    the gradients match the full-graph reference under the same autocast."""
    method = SimCSE(encoder, InfoNCELoss(0.05), mode="unsupervised")
    batch = TextBatch([encoder.tokenize(TEXTS)], torch.arange(len(TEXTS)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, ref, _ = reference_grads(method, batch, 4, seed=5)
        cache = GradCache(4, record=True)
        _, ours, _ = cached_grads(method, batch, cache, seed=5)
    assert cache.last_stats is not None
    for x, y in zip(cache.last_stats.first_pass[0], cache.last_stats.second_pass[0], strict=True):
        assert torch.equal(x, y)
    for a, b in zip(ours, ref, strict=True):
        # bf16 accuracy (2**-8 relative, times a few) of each tensor's largest gradient:
        # the chunks' weight gradients are summed in bf16 by one side only (and 1e-6 for
        # gradients that are zero but for rounding, as the attention keys' bias)
        torch.testing.assert_close(a, b, atol=2e-2 * float(b.abs().max()) + 1e-6, rtol=2e-2)


def test_lightning_cached_bf16_mixed_runs(tmp_path, tiny_model):
    run = _fit(tmp_path, tiny_model, "bf16", "gradcache.chunk_size=4", "trainer.precision=bf16-mixed")
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2
