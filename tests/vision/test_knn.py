"""Weighted kNN against a brute-force loop; presets; the evaluator on the bundled digits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from contrastlib.encoders.image import PixelEncoder
from contrastlib.evaluation.knn import KNNEvaluator, knn_classify

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


def _noisy_digits(folder: Path) -> tuple[Path, Path]:
    """The bundled digits under heavy pixel noise: many test images lie near a class
    boundary, so weighted kNN's top-1 depends on k and T (checked below)."""
    rng = np.random.default_rng(0)
    out = []
    for split in ("train", "test"):
        d = np.load(BUNDLED / f"digits-{split}.npz")
        noisy = np.clip(d["images"].astype(np.float64) + rng.normal(0, 80, d["images"].shape), 0, 255)
        np.savez(folder / f"noisy-{split}.npz", images=noisy.astype(np.uint8), labels=d["labels"])
        out.append(folder / f"noisy-{split}.npz")
    return out[0], out[1]


def _pixels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from contrastlib.data.images import read_images
    from contrastlib.evaluation.knn import embed_images

    return embed_images(PixelEncoder(), read_images(path), size=8, channels=1)


def _numpy_knn_top1(train, ytr, test, yte, k, t) -> float:
    """Weighted kNN in plain numpy (cosine, the k most similar, exp(sim / T) votes)."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = unit(test.astype(np.float64)) @ unit(train.astype(np.float64)).T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test), int(ytr.max()) + 1))
    np.add.at(votes, (np.repeat(np.arange(len(test)), k), ytr[top].reshape(-1)),
              np.exp(np.take_along_axis(sims, top, axis=1) / t).reshape(-1))
    return float((votes.argmax(1) == yte).mean() * 100)


def test_presets_give_the_peers_results_through_the_cli(tmp_path, capsys):
    """``eval knn --preset lightly`` gives the top-1 of lightly's own ``knn_predict`` at its
    defaults on the same features; ``--preset solo-learn`` that of solo-learn's
    WeightedKNNClassifier protocol (its defaults k 20, T 0.07; cosine), computed in numpy.
    On noisy digits the top-1 moves with k and T, so a preset with other values fails."""
    import json

    import torch
    import torch.nn.functional as F
    from lightly.utils.benchmarking import knn_predict

    from contrastlib.cli.main import main

    train, test = _noisy_digits(tmp_path)
    tr, ytr = _pixels(train)
    te, yte = _pixels(test)
    bank, queries = F.normalize(torch.from_numpy(tr), dim=1), F.normalize(torch.from_numpy(te), dim=1)
    lightly_top1 = float((knn_predict(queries, bank.T, torch.from_numpy(ytr), 10)[:, 0].numpy() == yte).mean() * 100)
    solo_top1 = _numpy_knn_top1(tr, ytr, te, yte, 20, 0.07)
    # the figures discriminate: other k or T give other answers on this data
    others = {_numpy_knn_top1(tr, ytr, te, yte, k, t)
              for k, t in ((100, 0.1), (200, 0.2), (200, 0.07), (20, 0.1), (20, 0.14), (10, 0.07))}
    assert lightly_top1 not in others and solo_top1 not in others and lightly_top1 != solo_top1, (lightly_top1, solo_top1, others)
    assert _numpy_knn_top1(tr, ytr, te, yte, 200, 0.1) == pytest.approx(lightly_top1)  # the numpy loop is lightly's
    for preset, expected in (("lightly", lightly_top1), ("solo-learn", solo_top1)):
        assert main(["eval", "knn", "-m", "pixels", "--train", str(train), "--test", str(test), "--size", "8",
                     "--channels", "1", "--preset", preset, "--no-progress", "--json"]) == 0
        got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert got["top1"] == pytest.approx(expected, abs=1e-9), preset
        # and a fit's eval.knn entry naming the preset (the config's route to the evaluator)
        ev = KNNEvaluator.from_entry({"train": str(train), "test": str(test), "preset": preset, "size": 8, "channels": 1},
                                    batch_size=512, precision="fp32")
        assert ev(PixelEncoder())["top1"] == pytest.approx(expected, abs=1e-9), preset


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
