"""The gradient cache on the image methods: SimCLR, MoCo v2 and MoCo v3 (its predictor
head outside the encoder) get the gradients of one big graph, projection heads and
predictors included.

Exactness needs a model without BatchNorm: BatchNorm normalises each chunk with the
chunk's own statistics, so a cached step is not the full-batch step (the caveat in
contrastlib/training/gradcache.py, which warns at run time). Here a timm ViT (LayerNorm only) at 16 px with BatchNorm-free heads.
With BatchNorm, ``fit`` still runs with the cache (the last test), but the step is the
chunked-statistics one.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from contrastlib.data.image_batches import ImageBatch
from contrastlib.encoders.image import ImageEncoder, ProjectionHead
from contrastlib.losses import InfoNCELoss, NTXentLoss
from contrastlib.methods.moco import MoCo
from contrastlib.methods.simclr import SimCLR
from contrastlib.training.gradcache import GradCache, embed_in_chunks, split_rows


def _encoder() -> ImageEncoder:
    torch.manual_seed(0)
    enc = ImageEncoder("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2)
    enc.head = ProjectionHead([enc.feature_dim, 48, 24], batch_norm=False)
    enc.dim = 24
    return enc


def _module(kind: str) -> Any:
    if kind == "simclr":
        return SimCLR(_encoder(), NTXentLoss(0.2))
    m = MoCo(_encoder(), InfoNCELoss(0.2), version=2 if kind == "moco2" else 3, queue_size=32)
    if m.predictor_head is not None:
        m.predictor_head = ProjectionHead([24, 48, 24], batch_norm=False)
    return m


def _grads(m: torch.nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["simclr", "moco2", "moco3"])
@pytest.mark.parametrize("chunk", [3, 8])
def test_cached_step_equals_one_graph(kind, chunk):
    m = _module(kind)
    m.train()
    g = torch.Generator().manual_seed(1)
    batch = ImageBatch(torch.randn(2, 8, 3, 16, 16, generator=g), torch.arange(8), torch.zeros(8, dtype=torch.long))
    views = m.views(batch)
    embs = [embed_in_chunks(m.encoder, split_rows(v, chunk, None)) for v in views]
    ref_loss = m.contrast(embs, batch)
    ref_loss.backward()
    ref = _grads(m)
    m.zero_grad()
    m._pending = []
    loss = GradCache(chunk).step(m.encoder, views, lambda e: m.contrast(e, batch), extra_params=list(m.parameters()))
    got = _grads(m)
    assert float(loss) == pytest.approx(float(ref_loss), abs=1e-6)
    assert ref.keys() == got.keys()
    assert any(n.startswith("encoder.head.") for n in got)  # the projection head got its gradient
    if kind == "moco3":
        assert any(n.startswith("predictor_head.") for n in got)  # and the predictor outside the encoder
    assert not any(n.startswith("momentum_encoder.") for n in got)  # the key encoder takes no gradient
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], atol=1e-5, rtol=1e-4, msg=lambda msg, n=n: f"{n}: {msg}")


def test_fit_with_the_cache_through_the_cli(tmp_path):
    """The path users run: ``gradcache.chunk_size`` on an image recipe (BatchNorm: the
    chunked-statistics step) trains, and MoCo's queue still advances once per step."""
    from contrastlib.cli.main import main

    for recipe in ("simclr-digits", "moco-digits"):
        code = main([
            "fit", recipe, f"output_dir={tmp_path}", f"name={recipe}", "gradcache.chunk_size=8", "data.batch_size=16",
            "data.max_rows=48", "trainer.max_steps=3", "trainer.enable_progress_bar=false", "model.name=resnet10t",
            "model.projection=[64,32]", "eval.knn=[]", "eval.linear=[]", "eval.every_n_epochs=null",
            "method.online_probe=false", "eval.projection=none", "trainer.precision=32-true",
        ] + (["method.queue_size=64"] if recipe == "moco-digits" else []))
        assert code == 0
        state = torch.load(tmp_path / recipe / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert state["global_step"] == 3
        if recipe == "moco-digits":
            assert int(state["state_dict"]["queue_ptr"]) == 3 * 16 % 64
