"""Weighted kNN classification of embeddings (Wu et al. 2018, "Unsupervised Feature
Learning via Non-Parametric Instance Discrimination"), the monitor every SSL library runs.

A test embedding's k nearest training embeddings (cosine similarity, exact FAISS search
from :mod:`contrastlib.index`) vote for their classes with weight ``exp(sim / T)``; the
class with the largest total wins (top-1), and the five largest give top-5. Presets
match the peers' published protocols:

* ``lightly``: k 200, T 0.1 (lightly's ``knn_predict`` and its benchmark tables);
* ``solo-learn``: k 20, T 0.07 (solo-learn's ``WeightedKNNClassifier``, cosine).

Ties between classes go to the smaller class index (``torch.topk`` order on equal
scores is not specified; the reference loop in the tests does the same).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from contrastlib.evaluation.base import Evaluation
from contrastlib.index import IndexSpec, VectorIndex, l2_normalise
from contrastlib.registry import EVALUATIONS

PRESETS: dict[str, tuple[int, float]] = {"lightly": (200, 0.1), "solo-learn": (20, 0.07)}


@dataclass(frozen=True)
class KNNResult:
    top1: float
    top5: float
    k: int
    temperature: float
    n_train: int
    n_test: int
    #: Predicted class per test item.
    predictions: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "k": self.k, "temperature": self.temperature,
                "n_train": self.n_train, "n_test": self.n_test}


def knn_scores(
    train: Any, train_labels: Sequence[int] | np.ndarray, test: Any, *, k: int, temperature: float, num_classes: int | None = None,
    index_spec: IndexSpec | None = None,
) -> np.ndarray:
    """``[n_test, num_classes]`` weighted votes: for each test row, ``sum exp(sim / T)``
    over its ``k`` nearest training rows, per class."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    train_e, test_e = l2_normalise(train), l2_normalise(test)
    labels = np.asarray(train_labels, dtype=np.int64)
    if len(labels) != len(train_e):
        raise ValueError(f"{len(labels)} labels for {len(train_e)} training embeddings")
    if labels.min() < 0:
        raise ValueError("class labels must be >= 0")
    n_classes = int(num_classes or labels.max() + 1)
    k = min(k, len(train_e))
    index = VectorIndex(train_e.shape[1], index_spec or IndexSpec("flat"))
    index.train(train_e)
    index.add(train_e)
    sims, ids = index.search(test_e, k)
    weights = np.exp(sims.astype(np.float64) / temperature)
    weights[ids < 0] = 0.0
    votes = np.zeros((len(test_e), n_classes), dtype=np.float64)
    rows = np.repeat(np.arange(len(test_e)), k)
    np.add.at(votes, (rows, labels[np.clip(ids, 0, None)].reshape(-1)), weights.reshape(-1))
    return votes


def knn_classify(
    train: Any, train_labels: Sequence[int] | np.ndarray, test: Any, test_labels: Sequence[int] | np.ndarray, *, k: int = 200,
    temperature: float = 0.1, index_spec: IndexSpec | None = None,
) -> KNNResult:
    """Top-1 and top-5 accuracy (percent) of weighted kNN from ``train`` to ``test``."""
    truth = np.asarray(test_labels, dtype=np.int64)
    n_classes = int(max(np.max(train_labels), truth.max()) + 1)
    votes = knn_scores(train, train_labels, test, k=k, temperature=temperature, num_classes=n_classes,
                       index_spec=index_spec)
    # stable descending order: equal votes go to the smaller class index
    order = np.argsort(-votes, axis=1, kind="stable")
    top1 = float((order[:, 0] == truth).mean() * 100)
    top5 = float((order[:, : min(5, n_classes)] == truth[:, None]).any(axis=1).mean() * 100)
    return KNNResult(top1, top5, min(k, len(train_labels)), temperature, len(train_labels), len(truth), order[:, 0])


def embed_images(
    encoder: Any, images: Any, *, size: int, channels: int = 3, batch_size: int = 256, num_workers: int = 0,
    precision: str = "fp32", show_progress_bar: bool = False, features: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings [N, F], labels [N])`` of an :class:`~contrastlib.data.images.ImageSet`
    through the evaluation transform. ``features``: the backbone's output (before any
    projection head: what kNN and linear probes read), else the full encoder's."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from contrastlib.data.augment import eval_transform
    from contrastlib.data.image_batches import TransformedImages
    from contrastlib.utils.modes import eval_mode
    from contrastlib.utils.precision import autocast_context

    dataset: Any = TransformedImages(images, eval_transform(size, channels=channels))
    loader: DataLoader[Any] = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    fn = encoder.features if features else encoder
    params = list(encoder.parameters())
    device = params[0].device if params else torch.device("cpu")
    out, labels = [], []
    with eval_mode(encoder), torch.inference_mode(), autocast_context(device, precision):
        for x, y in tqdm(loader, desc="embed images", disable=not show_progress_bar):
            out.append(fn(x.to(device)).float().cpu())
            labels.append(y)
    return torch.cat(out).numpy(), torch.cat(labels).numpy()


def add_image_set_arguments(p: argparse.ArgumentParser) -> None:
    """The options ``contrastlib eval knn`` and ``eval linear`` share."""
    p.add_argument("--model", "-m", required=True,
                   help="image run dir, 'timm:NAME' (random init: a floor) or 'pixels' (raw pixels: a floor)")
    p.add_argument("--train", required=True, help="labelled image set: folder, .zip[:SUB], .npz, IDX files or a folder of them")
    p.add_argument("--test", required=True, help="labelled image set, same forms")
    p.add_argument("--size", type=int, default=None,
                   help="image side the model sees (default: what the run trained at; 32 for timm:NAME and pixels)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="colour channels the model sees (default: what the run trained at, else 3)")
    p.add_argument("--cifar-stem", action="store_true", help="with timm:NAME, the 3x3 stride-1 CIFAR stem")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--no-progress", action="store_true")


def image_set_features(args: argparse.Namespace) -> tuple[np.ndarray, ...]:
    """``--train`` / ``--test`` read and checked (every image decoded) before ``--model``
    loads; then both embedded by the model's backbone at the size and channels it trained
    at (or ``--size`` / ``--channels``): ``(train, y_train, test, y_test)``."""
    from contrastlib.data.images import read_images
    from contrastlib.errors import ContrastlibError
    from contrastlib.loading import load_encoder

    if args.batch_size < 1:
        raise ContrastlibError(f"--batch-size must be >= 1, got {args.batch_size}")
    sets = {}
    for which, spec in (("train", args.train), ("test", args.test)):
        sets[which] = read_images(spec, verify="decode")
        if sets[which].labels is None:
            raise ContrastlibError(f"--{which} {spec}: no labels (class sub-folders, or a labels array)")
    encoder: Any = load_encoder(args.model, **({"cifar_stem": True} if args.cifar_stem else {}))
    if encoder.inputs != "images":
        raise ContrastlibError(f"--model {args.model}: encodes {encoder.inputs}, not images")
    kw = {"size": int(args.size or encoder.input_size or 32), "channels": int(args.channels or encoder.input_channels or 3),
          "batch_size": args.batch_size, "precision": args.precision, "num_workers": args.num_workers,
          "show_progress_bar": not args.no_progress}
    train, ytr = embed_images(encoder, sets["train"], **kw)
    test, yte = embed_images(encoder, sets["test"], **kw)
    return train, ytr, test, yte


#: Options every image-set entry takes (besides ``train`` and ``test``).
IMAGE_SET_OPTIONS = {"size", "channels"}


def labelled_sets(kind: str, spec: Any, options: set[str]) -> tuple[dict[str, Any], Any, Any]:
    """An ``eval.<kind>`` entry (a dict, or ``"TRAIN|TEST"``) checked against its keys,
    and its two labelled image sets, read (headers checked) before any model loads."""
    from contrastlib.data.images import read_images
    from contrastlib.errors import ConfigError

    entry = dict(spec) if not isinstance(spec, str) else {"train": spec.split("|")[0], "test": spec.split("|")[-1]}
    allowed = {"train", "test", *options, *IMAGE_SET_OPTIONS}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"eval.{kind}.{unknown[0]}: unknown key; valid: {', '.join(sorted(allowed))}")
    if "train" not in entry or "test" not in entry:
        raise ConfigError(f"eval.{kind}: each entry needs 'train' and 'test' image sets")
    train, test = read_images(entry["train"]), read_images(entry["test"])
    for which, s in (("train", train), ("test", test)):
        if s.labels is None:
            raise ConfigError(f"eval.{kind}.{which}: {entry[which]} has no labels (class sub-folders or a labels array)")
    return entry, train, test


@dataclass
class ImageSetEvaluator(Evaluation):
    """What the kNN and linear-probe evaluators share: two labelled image sets, read and
    checked when built, and embedded by the encoder's backbone when called, at ``size``
    and ``channels`` (default: those the encoder trained at, else 32 px RGB).

    ``cache``: one dict per evaluation round (:func:`~contrastlib.evaluation.base.run_evaluations`),
    so that evaluators of the same set and transform embed it once per round. After a
    run it draws the run's 2-D map of the test set's embeddings coloured by class
    (``plots/projection-*.png``; ``eval.projection``)."""

    takes: ClassVar[str] = "images"
    main_metric: ClassVar[str] = "top1"
    name: str
    train: Any
    test: Any
    size: int | None = None
    channels: int | None = None
    batch_size: int = 256
    precision: str = "fp32"
    #: ``(features, labels)`` of the test set from the latest call (the run's t-SNE map).
    last_test: Any = None

    @classmethod
    def image_options(cls, entry: dict[str, Any]) -> dict[str, Any]:
        return {"size": entry.get("size"), "channels": entry.get("channels")}

    def features(self, encoder: Any, cache: dict[Any, Any] | None = None) -> tuple[np.ndarray, ...]:
        """``(train, train_labels, test, test_labels)``."""
        size = int(self.size or encoder.input_size or 32)
        channels = int(self.channels or encoder.input_channels or 3)
        kw: dict[str, Any] = {"size": size, "channels": channels, "batch_size": self.batch_size,
                              "precision": self.precision}

        def embed(images: Any) -> tuple[np.ndarray, np.ndarray]:
            key = (images.source, len(images), size, channels, self.precision)
            if cache is None or key not in cache:
                out = embed_images(encoder, images, **kw)
                if cache is None:
                    return out
                cache[key] = out
            return cache[key]

        tr, ytr = embed(self.train)
        te, yte = embed(self.test)
        self.last_test = (te, yte)
        return tr, ytr, te, yte

    def __call__(self, encoder: Any, cache: dict[Any, Any] | None = None) -> dict[str, float]:
        raise NotImplementedError

    def after_fit(self, run_dir: Path, *, projection: str, points: int, seed: int, log: Callable[[str], None],
                  done: set[str]) -> None:
        source = str(self.test.source)
        if projection == "none" or self.last_test is None or source in done:
            return
        done.add(source)
        from contrastlib.evaluation.plots import plot_projection

        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(source).name)[:60]
        path = run_dir / "plots" / f"projection-{stem}.png"
        plot_projection(path, self.last_test[0], self.last_test[1], classes=self.test.classes,
                        points=points, seed=seed, title=f"t-SNE of test embeddings: {source}")
        log(f"wrote {path}")


@EVALUATIONS.register("knn", summary="weighted kNN top-1/top-5 of image embeddings (lightly / solo-learn presets)")
@dataclass
class KNNEvaluator(ImageSetEvaluator):
    """``eval.knn``: ``{train: SET, test: SET, preset: lightly | solo-learn, k, temperature,
    size, channels}``; both sets are read (and checked) when built, before any model loads."""

    k: int = 200
    temperature: float = 0.1

    @classmethod
    def from_entry(cls, entry: Any, *, batch_size: int, precision: str) -> KNNEvaluator:
        from contrastlib.errors import ConfigError

        entry, train, test = labelled_sets("knn", entry, {"preset", "k", "temperature"})
        preset = entry.get("preset", "lightly")
        if preset not in PRESETS:
            raise ConfigError(f"eval.knn.preset: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        k, t = PRESETS[preset]
        return cls(
            f"knn:{entry['test']}", train, test, k=int(entry.get("k", k)), temperature=float(entry.get("temperature", t)),
            batch_size=batch_size, precision=precision, **cls.image_options(entry),
        )

    cli_help: ClassVar[str | None] = "weighted kNN top-1/top-5 of an image encoder (train set -> test set)"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        add_image_set_arguments(p)
        p.add_argument("--preset", choices=list(PRESETS), default="lightly",
                       help="lightly: k 200, T 0.1; solo-learn: k 20, T 0.07")
        p.add_argument("--k", type=int, default=None, help="neighbours (overrides the preset)")
        p.add_argument("--temperature", type=float, default=None, help="vote temperature (overrides the preset)")

    @classmethod
    def run_cli(cls, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
        from contrastlib.errors import ContrastlibError

        k, temperature = PRESETS[args.preset]
        k, temperature = args.k or k, args.temperature or temperature
        if k < 1 or temperature <= 0:
            raise ContrastlibError(f"--k must be >= 1 and --temperature > 0, got {k} and {temperature}")
        train, ytr, test, yte = image_set_features(args)
        r = knn_classify(train, ytr, test, yte, k=k, temperature=temperature)
        payload = {"task": "knn", "model": args.model, "train": args.train, "test": args.test, "preset": args.preset,
                   **r.as_dict()}
        return payload, (f"kNN  {args.test}  train={r.n_train}  test={r.n_test}  k={r.k}  T={r.temperature:g}  "
                         f"top1={r.top1:.2f}  top5={r.top5:.2f}")

    def __call__(self, encoder: Any, cache: dict[Any, Any] | None = None) -> dict[str, float]:
        tr, ytr, te, yte = self.features(encoder, cache)
        r = knn_classify(tr, ytr, te, yte, k=self.k, temperature=self.temperature)
        return {"top1": r.top1, "top5": r.top5, "k": float(r.k)}
