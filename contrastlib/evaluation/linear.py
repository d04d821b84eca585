"""Linear probe: a multinomial logistic regression on frozen features, the other standard
measure of a self-supervised encoder (kNN is the first, :mod:`contrastlib.evaluation.knn`).

The protocol is CLIP's (Radford et al. 2021, appendix A.3): features of the un-augmented
train and test images from the frozen backbone (before any projection head), standardised
with the training set's mean and deviation, then scikit-learn's L-BFGS logistic
regression. The L2 strength ``C`` is either given or chosen (``"auto"``) from a
logarithmic grid by accuracy on a held-out, class-stratified fifth of the training set,
and the classifier is then refitted on all of it. The test set is never used to choose.

This differs from the peers' "linear eval" of 90-100 epochs of SGD on augmented crops
(lightly's and solo-learn's tables): on frozen features it costs seconds, not hours, and
it is deterministic. It is the number to track; for a paper table, use their protocol.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from contrastlib.evaluation.knn import (
    ImageSetEvaluator,
    add_image_set_arguments,
    image_set_features,
    labelled_sets,
)
from contrastlib.registry import EVALUATIONS

#: Grid of ``C`` tried by ``C="auto"`` (CLIP sweeps 1e-6..1e6; these cover the useful part
#: for standardised features at a fraction of the cost).
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class LinearResult:
    top1: float
    top5: float
    C: float
    n_train: int
    n_test: int
    #: Held-out accuracy per C tried (empty when C was given).
    search: dict[float, float]
    predictions: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "C": self.C, "n_train": self.n_train, "n_test": self.n_test,
                "search": {str(k): v for k, v in self.search.items()}}


def _fit(x: np.ndarray, y: np.ndarray, C: float, max_iter: int, seed: int) -> Any:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():  # the grid's weakest C may stop at max_iter: its score says so
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def _holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-stratified split of row indices: ``fraction`` of each class held out (at
    least one row of every class with two or more rows)."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        n = round(len(rows) * fraction) if len(rows) > 1 else 0
        held.append(rows[: max(n, 1 if len(rows) > 1 else 0)])
    out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(y)), out), out


def linear_probe(
    train: Any, train_labels: Any, test: Any, test_labels: Any, *, C: float | str = "auto", max_iter: int = 1000,
    seed: int = 0, holdout: float = 0.2,
) -> LinearResult:
    """Top-1 / top-5 accuracy (percent) of a logistic regression fitted on ``train``."""
    xtr, xte = np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64)
    ytr, yte = np.asarray(train_labels, dtype=np.int64), np.asarray(test_labels, dtype=np.int64)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError(f"features and labels differ in length: {len(xtr)}/{len(ytr)}, {len(xte)}/{len(yte)}")
    if len(np.unique(ytr)) < 2:
        raise ValueError("a linear probe needs at least two classes in the training set")
    if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
        raise ValueError("features hold NaN or infinite values")
    search: dict[float, float] = {}
    if C == "auto":
        fit_rows, held = _holdout(ytr, holdout, seed)
        for c in C_GRID:
            m = _fit(xtr[fit_rows], ytr[fit_rows], c, max_iter, seed)
            search[c] = float((m.predict(xtr[held]) == ytr[held]).mean() * 100)
        # the best held-out accuracy; ties go to the stronger regularisation (smaller C)
        C = max(C_GRID, key=lambda c: (search[c], -c))
    elif isinstance(C, str) or not C > 0:
        raise ValueError(f"C must be > 0 or 'auto', got {C!r}")
    model = _fit(xtr, ytr, float(C), max_iter, seed)
    proba = model.predict_proba(xte)
    classes = model.classes_
    order = classes[np.argsort(-proba, axis=1, kind="stable")]
    top1 = float((order[:, 0] == yte).mean() * 100)
    top5 = float((order[:, : min(5, len(classes))] == yte[:, None]).any(axis=1).mean() * 100)
    return LinearResult(top1, top5, float(C), len(ytr), len(yte), search, order[:, 0])


@EVALUATIONS.register("linear", summary="linear probe (logistic regression on frozen image features)")
@dataclass
class LinearEvaluator(ImageSetEvaluator):
    """``eval.linear``: ``{train: SET, test: SET, C: auto | number, max_iter, size,
    channels}`` per entry; both sets are read (and checked) when built."""

    C: float | str = "auto"
    max_iter: int = 1000

    @classmethod
    def from_entry(cls, entry: Any, *, batch_size: int, precision: str) -> LinearEvaluator:
        entry, train, test = labelled_sets("linear", entry, {"C", "max_iter"})
        C = entry.get("C", "auto")
        if C != "auto" and not (isinstance(C, (int, float)) and C > 0):
            from contrastlib.errors import ConfigError

            raise ConfigError(f"eval.linear.C: must be 'auto' or a number > 0, got {C!r}")
        return cls(
            f"linear:{entry['test']}", train, test, C=C if C == "auto" else float(C),
            max_iter=int(entry.get("max_iter", 1000)), batch_size=batch_size, precision=precision,
            **cls.image_options(entry),
        )

    cli_help: ClassVar[str | None] = "linear probe (logistic regression on frozen features) of an image encoder"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        add_image_set_arguments(p)
        p.add_argument("--C", default="auto",
                       help="inverse L2 strength, or 'auto': chosen on a held-out fifth of --train (default)")
        p.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations")

    @classmethod
    def run_cli(cls, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
        from contrastlib.errors import ContrastlibError

        C: float | str = "auto"
        if args.C != "auto":
            try:
                C = float(args.C)
            except ValueError:
                C = -1.0
            if not C > 0:
                raise ContrastlibError(f"--C must be 'auto' or a number > 0, got {args.C!r}")
        if args.max_iter < 1:
            raise ContrastlibError(f"--max-iter must be >= 1, got {args.max_iter}")
        train, ytr, test, yte = image_set_features(args)
        r = linear_probe(train, ytr, test, yte, C=C, max_iter=args.max_iter)
        search = "  ".join(f"C={c:g}: {a:.2f}" for c, a in r.search.items())
        payload = {"task": "linear", "model": args.model, "train": args.train, "test": args.test, **r.as_dict()}
        return payload, (f"linear probe  {args.test}  train={r.n_train}  test={r.n_test}  C={r.C:g}  "
                         f"top1={r.top1:.2f}  top5={r.top5:.2f}" + (f"\nheld-out accuracy by C: {search}" if search else ""))

    def __call__(self, encoder: Any, cache: dict[Any, Any] | None = None) -> dict[str, float]:
        tr, ytr, te, yte = self.features(encoder, cache)
        r = linear_probe(tr, ytr, te, yte, C=self.C, max_iter=self.max_iter)
        return {"top1": r.top1, "top5": r.top5, "C": r.C}
