"""Plots a run writes: evaluation curves per epoch and a 2-D map of test embeddings.

Drawn with matplotlib's object API (no pyplot: no global state, no GUI backend) and
written atomically, so a killed run leaves the previous picture or the new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contrastlib.utils.io import save_figure


def plot_curves(path: str | Path, history: Sequence[dict[str, Any]], metrics: dict[str, str]) -> Path:
    """One panel per evaluation: its main metric (``metrics[name]``) against the epoch.

    ``history``: rows ``{"epoch", "step", "name", "metric", "value"}`` (epoch 0: before
    training)."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(r["name"] for r in history))
    fig = Figure(figsize=(5.5 * max(len(names), 1), 3.6), dpi=110)
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=False):
        main = metrics.get(name, "")
        rows = sorted((r for r in history if r["name"] == name and r["metric"] == main), key=lambda r: r["step"])
        xs, ys = [r["epoch"] for r in rows], [r["value"] for r in rows]
        ax.plot(xs, ys, marker="o", color="tab:blue")
        for x, y in zip(xs[-1:], ys[-1:], strict=True):
            ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.set_title(name if len(name) < 48 else "..." + name[-45:], fontsize=9)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0: before training)")
        ax.set_ylabel(main)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Row indices of at most ``n`` rows, each class in proportion to its size (sorted)."""
    if len(labels) <= n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = max(1, round(n * len(rows) / len(labels)))
        picked.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(picked))[: max(n, 0) or None]


def project_2d(embeddings: np.ndarray, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE (scikit-learn; PCA initialisation, cosine distances) of ``[N, D]`` -> ``[N, 2]``."""
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float32)
    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3))
    tsne = TSNE(n_components=2, init="pca", metric="cosine", perplexity=perplexity, random_state=seed)
    out: np.ndarray = tsne.fit_transform(x)
    return out


def plot_projection(
    path: str | Path, embeddings: np.ndarray, labels: np.ndarray, *, classes: Sequence[str] | None = None,
    title: str = "", points: int = 2000, seed: int = 0,
) -> Path:
    """A t-SNE map of (a class-stratified sample of) ``embeddings`` coloured by class."""
    from matplotlib.figure import Figure

    labels = np.asarray(labels)
    rows = stratified_sample(labels, points, seed)
    xy = project_2d(np.asarray(embeddings)[rows], seed=seed)
    y = labels[rows]
    fig = Figure(figsize=(6.5, 5.5), dpi=110)
    ax = fig.subplots()
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(np.unique(y)) <= 10 else "tab20"]
    for i, c in enumerate(np.unique(y)):
        m = y == c
        name = classes[int(c)] if classes is not None and int(c) < len(classes) else str(int(c))
        ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.75, color=cmap(i % cmap.N), label=name, linewidths=0)
    if len(np.unique(y)) <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2.5, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(rows)} test embeddings", fontsize=9)
    return save_figure(fig, path)
