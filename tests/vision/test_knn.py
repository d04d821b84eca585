"""Weighted kNN against a brute-force loop; presets; the evaluator on the bundled digits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from contrastlib.encoders.image import PixelEncoder
from contrastlib.evaluation.knn import PRESETS, KNNEvaluator, knn_classify

BUNDLED = Path(__file__).resolve().parents[2] / "datasets" / "digits"


def brute_force_knn(train, ytr, test, k, t):
    """Plain Python: cosine to every training row, the k best, exp(sim / T) votes,
    argmax with ties to the smaller class."""
    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    train = [unit(list(map(float, r))) for r in train]
    preds, top5 = [], []
    n_classes = max(ytr) + 1
    for q in test:
        q = unit(list(map(float, q)))
        sims = sorted(((sum(a * b for a, b in zip(q, r, strict=True)), j) for j, r in enumerate(train)), key=lambda s: -s[0])[:k]
        votes = [0.0] * n_classes
        for s, j in sims:
            votes[ytr[j]] += math.exp(s / t)
        order = sorted(range(n_classes), key=lambda c: (-votes[c], c))
        preds.append(order[0])
        top5.append(order[:5])
    return preds, top5


@pytest.mark.parametrize("k,t", [(1, 0.1), (7, 0.07), (50, 0.5)])
def test_knn_matches_the_brute_force_loop(k, t):
    rng = np.random.default_rng(k)
    centers = rng.normal(size=(6, 12))
    ytr = rng.integers(0, 6, 80)
    yte = rng.integers(0, 6, 30)
    train = centers[ytr] + rng.normal(scale=1.2, size=(80, 12))
    test = centers[yte] + rng.normal(scale=1.2, size=(30, 12))
    r = knn_classify(train.astype(np.float32), ytr, test.astype(np.float32), yte, k=k, temperature=t)
    preds, top5 = brute_force_knn(train, list(ytr), test, k, t)
    assert list(r.predictions) == preds
    assert r.top1 == pytest.approx(100 * np.mean(np.array(preds) == yte))
    assert r.top5 == pytest.approx(100 * np.mean([y in p for y, p in zip(yte, top5, strict=True)]))
    assert 0 < r.top1 < 100  # neither trivially right nor wrong


def test_presets_match_the_peers_protocols():
    assert PRESETS["lightly"] == (200, 0.1) and PRESETS["solo-learn"] == (20, 0.07)


def test_evaluator_on_bundled_digits_raw_pixels_floor():
    ev = KNNEvaluator.from_entry(
        {"train": str(BUNDLED / "digits-train.npz"), "test": str(BUNDLED / "digits-test.npz"), "preset": "solo-learn",
         "size": 8, "channels": 1},
        batch_size=512, precision="fp32",
    )
    out = ev(PixelEncoder())
    assert out["k"] == 20 and out["top1"] > 90  # 8x8 digits are nearly separable in pixel space


def test_evaluator_config_errors_name_the_key(tmp_path):
    from contrastlib.errors import ConfigError

    spec = {"train": str(BUNDLED / "digits-train.npz"), "test": str(BUNDLED / "digits-test.npz")}
    with pytest.raises(ConfigError, match="eval.knn.neighbours: unknown key"):
        KNNEvaluator.from_entry({**spec, "neighbours": 3}, batch_size=8, precision="fp32")
    with pytest.raises(ConfigError, match="eval.knn.preset: unknown preset 'dino'"):
        KNNEvaluator.from_entry({**spec, "preset": "dino"}, batch_size=8, precision="fp32")
    np.save(tmp_path / "nolabels.npy", np.zeros((3, 4, 4), dtype=np.uint8))
    with pytest.raises(ConfigError, match="eval.knn.train: .* has no labels"):
        KNNEvaluator.from_entry({**spec, "train": str(tmp_path / "nolabels.npy")}, batch_size=8, precision="fp32")
