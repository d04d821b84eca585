"""The embedding cache: reuse, fingerprints, resume at the first missing shard, checksums."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from contrastlib.encoders.base import Encoder
from contrastlib.index.cache import EmbeddingCache, model_fingerprint


class CountingEncoder(Encoder):
    """A tiny real encoder: embeds a text by its bytes; counts what it encodes."""

    inputs, kind = "strings", "counting"

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)
        self.encoded: list[str] = []
        self.fail_after = fail_after

    def encode(self, texts, batch_size=32, show_progress_bar=False, **_):
        if self.fail_after is not None and len(self.encoded) >= self.fail_after:
            raise RuntimeError("killed")
        self.encoded += list(texts)
        # the last 8 bytes: distinct for every test text, so a row out of place shows
        x = torch.tensor([[float(b) for b in t.encode()[-8:].rjust(8, b"\0")] for t in texts])
        with torch.no_grad():
            return self.proj(x).numpy()

    def spec_dict(self):
        return {}


TEXTS = [f"text number {i}" for i in range(23)]
#: The order the cache encodes them in: longest first, ties in input order.
BY_LENGTH = sorted(TEXTS, key=lambda t: -len(t))


def test_second_run_reads_everything_from_disk(tmp_path, tiny, stsb_sentences):
    cache = EmbeddingCache(tmp_path, shard_size=64)
    texts = stsb_sentences[:150]
    first = cache.embed(tiny, texts, show_progress_bar=False)
    assert cache.last_stats == {"shards": 3, "reused": 0, "encoded": 3}
    second = cache.embed(tiny, texts, show_progress_bar=False)
    assert cache.last_stats == {"shards": 3, "reused": 3, "encoded": 0}
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, tiny.encode(texts, batch_size=64), atol=1e-5)


def test_shards_follow_length_and_rows_come_back_in_input_order(tmp_path):
    """Each shard holds texts of similar length (few encode widths per run), longest first;
    the matrix is in input order, cold and warm."""
    rng = np.random.default_rng(0)
    texts = ["w" * int(n) + f" {i}" for i, n in enumerate(rng.integers(1, 60, size=40))]
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, shard_size=8)
    out = cache.embed(enc, texts, show_progress_bar=False)
    assert enc.encoded == sorted(texts, key=lambda t: -len(t))
    np.testing.assert_allclose(out, enc.encode(texts), atol=1e-6)  # row i is text i
    np.testing.assert_array_equal(cache.embed(enc, texts, show_progress_bar=False), out)


def test_key_changes_with_weights_prompt_precision_and_texts(tmp_path):
    enc = CountingEncoder()
    cache = EmbeddingCache(tmp_path, shard_size=5)
    base = cache.key(enc, TEXTS)
    assert cache.key(enc, TEXTS, prompt="query: ") != base
    assert cache.key(enc, TEXTS, precision="bf16") != base
    assert cache.key(enc, TEXTS, encode_kwargs={"pad_to_multiple_of": 16}) != base
    assert cache.key(enc, [*TEXTS[:-1], "other"]) != base
    fp = model_fingerprint(enc)
    with torch.no_grad():
        enc.proj.weight[0, 0] += 1e-6
    assert model_fingerprint(enc) != fp and cache.key(enc, TEXTS) != base


def test_killed_run_resumes_at_the_first_missing_shard(tmp_path):
    cache = EmbeddingCache(tmp_path, shard_size=5)
    dying = CountingEncoder(fail_after=10)  # two shards done, then "killed"
    with pytest.raises(RuntimeError):
        cache.embed(dying, TEXTS, show_progress_bar=False)
    fresh = CountingEncoder()
    fresh.load_state_dict(dying.state_dict())
    out = cache.embed(fresh, TEXTS, show_progress_bar=False)
    assert fresh.encoded == BY_LENGTH[10:]  # only the shards that were missing
    assert cache.last_stats == {"shards": 5, "reused": 2, "encoded": 3}
    np.testing.assert_allclose(out, CountingEncoder.encode(fresh, TEXTS), atol=1e-6)


def test_a_damaged_shard_is_encoded_again(tmp_path):
    cache = EmbeddingCache(tmp_path, shard_size=5)
    enc = CountingEncoder()
    want = cache.embed(enc, TEXTS, show_progress_bar=False)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    shard = folder / "shard-00002.npy"
    shard.write_bytes(shard.read_bytes()[:-7])  # truncated
    enc.encoded.clear()
    got = cache.embed(enc, TEXTS, show_progress_bar=False)
    assert enc.encoded == BY_LENGTH[10:15]
    np.testing.assert_array_equal(got, want)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("damage", ["[]", "null", '{"n": 23, "shard_size": 5}', '{"n": 23, "shard_size": 5, "shards": {"0": {}}}', "\xff"])
def test_a_damaged_manifest_starts_a_new_one(tmp_path, damage):
    cache = EmbeddingCache(tmp_path, shard_size=5)
    enc = CountingEncoder()
    want = cache.embed(enc, TEXTS, show_progress_bar=False)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    (folder / "manifest.json").write_bytes(damage.encode("latin-1"))
    got = cache.embed(enc, TEXTS, show_progress_bar=False)
    np.testing.assert_array_equal(got, want)
    # each shard's own record (its sidecar, checksummed) still vouches for it
    assert cache.last_stats["encoded"] == 0
    assert sorted(json.loads((folder / "manifest.json").read_text())["shards"]) == ["0", "1", "2", "3", "4"]
    (folder / "manifest.json").write_bytes(damage.encode("latin-1"))
    for sidecar in folder.glob("shard-*.json"):
        sidecar.write_text(damage if damage != "\xff" else "{}")
    got = cache.embed(enc, TEXTS, show_progress_bar=False)
    np.testing.assert_array_equal(got, want)
    assert cache.last_stats["encoded"] == 5
