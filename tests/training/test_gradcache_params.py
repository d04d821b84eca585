"""The gradient cache covers every trainable parameter of the module, keeps cached
gradients in float32 until the surrogate backward, and leaves the learning-rate schedule
as it is without the cache (issue: "Gradient cache", "Schedule")."""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from contrastlib.encoders.base import Encoder
from contrastlib.losses import InfoNCELoss
from contrastlib.methods.base import ContrastiveModule
from contrastlib.training.gradcache import GradCache


class VectorEncoder(Encoder):
    """A small MLP over feature vectors, as an encoder (no token window)."""

    inputs, kind = "vectors", "vectors"

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 12), nn.Dropout(0.2), nn.Tanh(), nn.Linear(12, 8))
        self.dim = 8

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class HeadMethod(ContrastiveModule):
    """Two views of tensors; a projection head *outside* the encoder, applied in the loss
    step (as a MoCo v3 predictor or a reward head would be)."""

    def __init__(self, **kwargs: Any) -> None:
        torch.manual_seed(0)
        encoder = VectorEncoder()
        super().__init__(encoder, InfoNCELoss(0.2, learnable_temperature=True), **kwargs)
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 5))

    def views(self, batch: Any) -> list[Tensor]:
        x0, x1 = batch
        return [x0, x1]

    def contrast(self, embeddings: list[Tensor], batch: Any) -> Tensor:
        z0, z1 = (self.head(e) for e in embeddings)
        return self.loss_fn(z0, z1)

    def collator(self, data: Any = None) -> Any:
        return None


def _batch(n: int = 12) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g)


def _grads(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk", [1, 5, 12])
def test_cached_gradients_reach_a_head_outside_the_encoder(chunk):
    m = HeadMethod()
    m.train()
    batch = _batch()
    torch.manual_seed(11)
    # reference: the same chunked forwards (same dropout draws) in one graph
    from contrastlib.training.gradcache import embed_in_chunks, split_rows

    embs = [embed_in_chunks(m.encoder, split_rows(v, chunk, None)) for v in m.views(batch)]
    m.contrast(embs, batch).backward()
    ref = _grads(m)
    m.zero_grad()
    torch.manual_seed(11)
    GradCache(chunk).step(m.encoder, m.views(batch), lambda e: m.contrast(e, batch), extra_params=list(m.parameters()))
    got = _grads(m)
    assert {n for n in ref if n.startswith("head.")} == {n for n in got if n.startswith("head.")} != set()
    assert "loss_fn.temperature.log_scale" in got
    assert ref.keys() == got.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-5, rtol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


def test_cached_gradients_stay_float32_until_the_loss_scale_applies():
    """An fp16 encoder output with cached gradients below fp16's smallest subnormal
    (~6e-8): cast to fp16 before the scale, they vanish; scaled first, they survive."""
    torch.manual_seed(0)
    enc = nn.Linear(4, 3).half()
    x = (torch.rand(5, 4) + 0.5).half()  # positive: no cancellation in the expected sums
    scale = 2.0**16

    def loss_fn(embs: list[Tensor]) -> Tensor:
        return 1e-9 * embs[0].float().sum()  # dL/de = 1e-9 everywhere

    def scaled_backward(t: Tensor) -> None:
        (t * scale).backward()  # what a GradScaler does to the surrogate

    GradCache(5).step(enc, [x], loss_fn, backward=scaled_backward)
    got = enc.weight.grad.float() / scale
    expected = 1e-9 * x.float().sum(dim=0).expand(3, 4)
    assert got.abs().min() > 0, "cached gradients underflowed in fp16"
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=0)


# ----------------------------------------------------------------------------- schedule
class LRRecorder(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.step = 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step:  # an optimizer step just happened
            self.step = trainer.global_step
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def _lrs(cached: bool, accumulate: int, max_steps: int, max_epochs: int) -> list[float]:
    m = HeadMethod(
        lr=1e-2, warmup_ratio=0.2, scheduler="linear", accumulate_grad_batches=accumulate,
        grad_cache=GradCache(3) if cached else None,
    )
    x0, x1 = _batch(40)
    loader = DataLoader(TensorDataset(x0, x1), batch_size=4)  # 10 batches an epoch
    rec = LRRecorder()
    trainer = pl.Trainer(
        max_steps=max_steps, max_epochs=max_epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec],
        accumulate_grad_batches=1 if cached else accumulate,
    )
    trainer.fit(m, loader)
    return rec.lrs


@pytest.mark.parametrize("accumulate", [1, 3])
@pytest.mark.parametrize("max_steps,max_epochs", [(6, -1), (-1, 2), (6, 2), (30, 2)])
def test_learning_rate_at_every_step_is_the_same_with_and_without_the_cache(accumulate, max_steps, max_epochs):
    plain = _lrs(False, accumulate, max_steps, max_epochs)
    cached = _lrs(True, accumulate, max_steps, max_epochs)
    per_run = max_epochs * -(-10 // accumulate) if max_epochs > 0 else max_steps
    expected_steps = min(max_steps, per_run) if max_steps > 0 else per_run
    assert len(plain) == len(cached) == expected_steps
    assert cached == pytest.approx(plain, abs=0, rel=1e-12)
    # linear decay reaches zero at the end of the run, not before
    assert plain[-2] > 0


@pytest.mark.parametrize("loss_name", ["info_nce", "nt_xent", "dcl", "mv_dhel"])
def test_cached_step_inside_bf16_autocast_equals_the_automatic_path(loss_name):
    """Lightning runs training_step, and so the cached step, inside autocast; its automatic
    path runs backward outside it. The cache must not compute the loss's backward (or the
    surrogate's) in bf16: the loss step's gradients (head, temperature) equal the automatic
    path's (forward under autocast, backward outside) to float32 accuracy, far below the
    ~1e-3 relative error of a backward inside autocast."""
    from contrastlib.registry import LOSSES
    from contrastlib.training.gradcache import embed_in_chunks, split_rows

    m = HeadMethod()
    m.loss_fn = LOSSES.get(loss_name)(temperature=0.1)
    m.train()
    batch = _batch()
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embs = [embed_in_chunks(m.encoder, split_rows(v, 4, None)) for v in m.views(batch)]
        loss = m.contrast(embs, batch)
    loss.backward()  # outside autocast, as Lightning's automatic optimisation does
    ref = _grads(m)
    m.zero_grad()
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        GradCache(4).step(m.encoder, m.views(batch), lambda e: m.contrast(e, batch), extra_params=list(m.parameters()))
    got = _grads(m)
    assert ref.keys() == got.keys()
    for n in ref:
        scale = float(ref[n].abs().max())
        if n.startswith("encoder."):
            # The one-graph reference sums the chunks' weight gradients in bf16 (autocast
            # caches one bf16 copy of each weight per region); the cache sums them in fp32.
            # So only bf16 accuracy is shared here: 2**-8 relative, times a few.
            torch.testing.assert_close(got[n], ref[n], atol=2e-2 * scale, rtol=0, msg=lambda m, n=n: f"{n}: {m}")
        else:
            # head and temperature: gradients of the loss step alone, float32 on both paths
            torch.testing.assert_close(got[n], ref[n], atol=1e-5 * max(scale, 1e-3), rtol=1e-5, msg=lambda m, n=n: f"{n}: {m}")


def test_length_grouped_step_equals_one_forward_per_view(tiny_no_dropout):
    """``trainer.length_group_rows``: the views' text rows pooled and encoded in
    length-sorted groups, each padded to its own longest row, give the embeddings and
    gradients of one padded forward per view."""
    from contrastlib.data import TextBatch
    from contrastlib.methods import SimCSE

    texts = [
        "A man is playing a guitar on a stage in front of a very large and enthusiastic crowd.",
        "Dogs run.", "A woman slices onions in the kitchen.", "Rain.", "Two children play soccer in the park.",
        "The cat sleeps on a warm windowsill while the sun sets behind the hills.", "A chef cooks.", "Birds fly.",
    ]
    enc = tiny_no_dropout
    batch = TextBatch([enc.tokenize(texts), enc.tokenize(texts[::-1])], torch.arange(len(texts)))
    results = []
    for group in (None, 3):
        m = SimCSE(enc, InfoNCELoss(0.05), mode="supervised", length_group_rows=group)
        m.zero_grad()
        embs = m.embed_views(m.views(batch))
        m.contrast(embs, batch).backward()
        results.append(([e.detach() for e in embs], _grads(m)))
    (e_one, g_one), (e_grp, g_grp) = results
    for x, y in zip(e_grp, e_one, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
    assert g_one.keys() == g_grp.keys()
    for n in g_one:
        torch.testing.assert_close(g_grp[n], g_one[n], atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")
