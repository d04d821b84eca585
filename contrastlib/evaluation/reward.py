"""Reward-model metrics: pairwise and ranking accuracy, calibration, length bias, and
section-weighted accuracy.

The evaluator takes any *reward model*: an object with ``fit_texts(prompts, responses)``
(the model's own window policy), ``prefer(a, b, users)`` (log-odds that ``a`` beats
``b``), ``rewards(texts)`` and ``scalar``. It never needs a Lightning module.

* ``accuracy``: share of pairs whose chosen response gets the higher preference (a tie,
  log-odds exactly 0, counts as half);
* ``ece``: expected calibration error of ``sigmoid(log-odds)`` as the probability that the
  first of a pair wins, over 10 equal-width bins on ``[0, 1]``, with each pair counted in
  both orders so the bins are symmetric (Guo et al. 2017);
* ``length_corr``: Pearson correlation of the reward with the response length in characters,
  over every response (a length-bias check; scalar heads);
* ``length_pref``: share of pairs where the model prefers the longer response;
* ``acc/<subset>`` and ``section_acc``: per-subset accuracy and their unweighted mean, as
  RewardBench reports sections, when rows carry ``subset``;
* lists: ``ranking_acc`` (share of ordered pairs of a list in the right order) and
  ``top1`` (the best response ranked first);
* pairs tagged with an ``objective`` (and lists scored per objective, taken as each
  objective's pairs): ``acc/objective/<name>``. A vector-reward head (one with
  ``objectives`` and ``set_direction``) judges each such pair by that objective's
  component, as it was trained; other heads by their one reward.
"""

from __future__ import annotations

import argparse
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from contrastlib.data.preference import PreferenceRow, PreferenceSet, expand_pairs, read_preferences
from contrastlib.data.readers import add_bad_row_argument
from contrastlib.evaluation.base import Evaluation
from contrastlib.registry import EVALUATIONS

if TYPE_CHECKING:
    from contrastlib.models.reward import RewardModel


def expected_calibration_error(prob: np.ndarray, outcome: np.ndarray, bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """ECE of probabilities ``prob`` against 0/1 ``outcome``; also the reliability table
    (per bin: mean confidence, accuracy, count)."""
    prob = np.asarray(prob, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        if n == 0:
            table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "confidence": float("nan"),
                          "accuracy": float("nan"), "count": 0})
            continue
        conf, acc = float(prob[sel].mean()), float(outcome[sel].mean())
        ece += n / len(prob) * abs(conf - acc)
        table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "confidence": conf, "accuracy": acc, "count": n})
    return float(ece), table


def plot_reliability(table: list[dict[str, float]], path: str | Path, *, title: str = "") -> Path:
    """A reliability diagram (accuracy against confidence per bin, with counts) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from contrastlib.utils.io import save_figure

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    centres = [(t["lo"] + t["hi"]) / 2 for t in table]
    width = table[0]["hi"] - table[0]["lo"]
    acc = [t["accuracy"] if t["count"] else 0.0 for t in table]
    ax.bar(centres, acc, width=width * 0.9, color="tab:blue", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("observed: first response preferred")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(title or "reliability")
    hist.bar(centres, [t["count"] for t in table], width=width * 0.9, color="tab:gray")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("pairs")
    return save_figure(fig, path)


@dataclass
class RewardResult:
    metrics: dict[str, float]
    reliability: list[dict[str, float]] = field(default_factory=list)
    subsets: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_reward(model: RewardModel, prefs: PreferenceSet, *, batch_size: int = 4096) -> RewardResult:
    """Every metric of the module docstring for ``model`` on ``prefs``."""
    if prefs.kind == "unpaired":
        return _evaluate_unpaired(model, prefs, batch_size)
    # each text is embedded once for the pairs and the length check (models that memoise)
    with model.memoized():
        return _evaluate_pairs(model, prefs, batch_size)


@contextlib.contextmanager
def _direction(model: RewardModel, objective: str | None) -> Any:
    """``model``'s vector reward pointed at ``objective`` alone inside the block."""
    head = model.head
    names = list(head.objectives)
    if objective is None or not head.vector or objective not in names:
        yield
        return
    saved = [float(w) for w in head.state_dict()["direction"]]
    head.set_direction([1.0 if n == objective else 0.0 for n in names])
    try:
        yield
    finally:
        head.set_direction(saved)


def _evaluate_pairs(model: RewardModel, prefs: PreferenceSet, batch_size: int) -> RewardResult:
    rows = expand_pairs(prefs.rows) if prefs.per_objective else prefs.rows
    # one fitted text per (row, response); a row with a text the policy drops is skipped
    fitted: dict[tuple[int, int], str] = {}
    flat = [(n, i) for n, r in enumerate(rows) for i in range(len(r.responses))]
    texts = model.fit_texts([rows[n].prompt for n, _ in flat], [rows[n].responses[i] for n, i in flat],
                            [rows[n].where for n, _ in flat])
    for key, text in zip(flat, texts, strict=True):
        if text is not None:
            fitted[key] = text
    kept = [(n, a, b) for n, r in enumerate(rows) for a, b in r.ordered_pairs() if (n, a) in fitted and (n, b) in fitted]
    pairs = [(rows[n], a, b) for n, a, b in kept]
    if not pairs:
        raise ValueError(f"{prefs.source}: no pair left to evaluate")
    logit = np.zeros(len(pairs), dtype=np.float64)
    groups: dict[str | None, list[int]] = defaultdict(list)  # by objective: one direction each
    for i, (r, _, _) in enumerate(pairs):
        groups[r.objective].append(i)
    for objective, where in groups.items():
        with _direction(model, objective):
            for s in range(0, len(where), batch_size):
                idx = where[s : s + batch_size]
                a = [fitted[(kept[i][0], kept[i][1])] for i in idx]
                b = [fitted[(kept[i][0], kept[i][2])] for i in idx]
                users = [pairs[i][0].user for i in idx] if any(pairs[i][0].user for i in idx) else None
                logit[idx] = model.prefer(a, b, users).float().numpy()
    correct = np.where(logit > 0, 1.0, np.where(logit < 0, 0.0, 0.5))
    prob = 1 / (1 + np.exp(-logit))
    ece, table = expected_calibration_error(np.concatenate([prob, 1 - prob]),
                                            np.concatenate([np.ones_like(prob), np.zeros_like(prob)]))
    metrics = {"accuracy": float(correct.mean()), "ece": ece, "pairs": float(len(pairs)),
               "mean_prob_chosen": float(prob.mean())}
    longer_a = np.array([len(r.responses[x]) > len(r.responses[y]) for r, x, y in pairs])
    differ = np.array([len(r.responses[x]) != len(r.responses[y]) for r, x, y in pairs])
    if differ.any():
        prefers_longer = np.where(longer_a, logit > 0, logit < 0)[differ]
        metrics["length_pref"] = float(prefers_longer.mean())
    if model.scalar:
        keys = list(fitted)
        rewards = torch.cat([model.rewards([fitted[k] for k in keys[s : s + batch_size]])
                             for s in range(0, len(keys), batch_size)]).numpy()
        lengths = np.array([len(rows[n].responses[i]) for n, i in keys], dtype=np.float64)
        if len(rewards) > 2 and rewards.std() > 0 and lengths.std() > 0:
            metrics["length_corr"] = float(np.corrcoef(rewards, lengths)[0, 1])
    if prefs.kind == "lists" and not prefs.per_objective:
        _list_metrics(rows, pairs, logit, metrics)
    for objective, where in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if objective is not None:
            metrics[f"acc/objective/{objective}"] = float(correct[where].mean())
    subsets: dict[str, dict[str, float]] = {}
    by_subset: dict[str, list[float]] = defaultdict(list)
    for (r, _, _), c in zip(pairs, correct, strict=True):
        if r.subset is not None:
            by_subset[r.subset].append(float(c))
    if by_subset:
        for name, values in sorted(by_subset.items()):
            subsets[name] = {"accuracy": float(np.mean(values)), "pairs": float(len(values))}
            metrics[f"acc/{name}"] = subsets[name]["accuracy"]
        metrics["section_acc"] = float(np.mean([s["accuracy"] for s in subsets.values()]))
    return RewardResult(metrics, table, subsets)


def _list_metrics(rows: list[PreferenceRow], pairs: list[tuple[PreferenceRow, int, int]], logit: np.ndarray,
                  metrics: dict[str, float]) -> None:
    metrics["ranking_acc"] = float((logit > 0).mean())
    # top-1: the best response beats every other response of its list
    best_wins: dict[int, bool] = {}
    for (r, a, _), z in zip(pairs, logit, strict=True):
        top = max(range(len(r.responses)), key=lambda i: r.scores[i])
        if a == top:
            best_wins[id(r)] = best_wins.get(id(r), True) and bool(z > 0)
    if best_wins:
        metrics["top1"] = float(np.mean(list(best_wins.values())))


def _evaluate_unpaired(model: RewardModel, prefs: PreferenceSet, batch_size: int) -> RewardResult:
    rows = prefs.rows
    texts = model.fit_texts([r.prompt for r in rows], [r.responses[0] for r in rows], [r.where for r in rows])
    keep = [i for i, t in enumerate(texts) if t is not None]
    kept = [t for t in texts if t is not None]
    rewards = torch.cat([model.rewards(kept[s : s + batch_size])
                         for s in range(0, len(keep), batch_size)]).numpy()
    labels = np.array([rows[i].scores[0] for i in keep])
    prob = 1 / (1 + np.exp(-rewards))  # a thumbs-up: a reward above 0
    ece, table = expected_calibration_error(prob, labels)
    metrics = {"accuracy": float(((prob > 0.5) == (labels > 0.5)).mean()), "ece": ece, "rows": float(len(keep))}
    pos, neg = rewards[labels > 0.5], rewards[labels <= 0.5]
    if len(pos) and len(neg):  # AUC: a random thumbs-up outscores a random thumbs-down
        from scipy.stats import mannwhitneyu

        metrics["auc"] = float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))
    return RewardResult(metrics, table)


@EVALUATIONS.register("reward", summary="reward model: pairwise accuracy, ECE, length bias, per-subset accuracy")
class RewardEvaluator(Evaluation):
    """``eval.reward``: a preference file (any format), or the method's held-out split."""

    takes: ClassVar[str] = "reward_model"
    main_metric: ClassVar[str] = "accuracy"

    def __init__(self, name: str, prefs: PreferenceSet, *, plot_dir: Path | None = None) -> None:
        self.name, self.prefs = name, prefs
        self.plot_dir = plot_dir
        self.last: RewardResult | None = None

    @classmethod
    def from_entry(cls, entry: Any, *, batch_size: int = 128, precision: str = "fp32") -> RewardEvaluator:
        prefs = read_preferences(str(entry))  # read now: a bad file fails before any work
        return cls(f"reward:{Path(str(entry)).name}", prefs)

    cli_help: ClassVar[str | None] = "reward model: pairwise accuracy, ECE, length bias, per-subset accuracy"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", "-m", required=True, help="reward run dir (or its model/ dir)")
        p.add_argument("--data", "-d", required=True,
                       help="preference file or directory (HH-RLHF, {prompt, chosen, rejected}, lists, unpaired; .jsonl[.gz])")
        add_bad_row_argument(p, "preference row")
        p.add_argument("--plot", help="write a reliability diagram (PNG) here")
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")

    @classmethod
    def run_cli(cls, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
        from contrastlib.models.reward import RewardModel
        from contrastlib.utils.precision import auto_encode_precision
        from contrastlib.utils.tables import table

        prefs = read_preferences(args.data, on_bad_row=args.on_bad_row)  # bad data fails before the model loads
        model = RewardModel.load(args.model, precision=auto_encode_precision(args.precision), batch_size=args.batch_size)
        result = evaluate_reward(model, prefs)
        m = result.metrics
        lines = [f"reward  {args.data}  {prefs.kind}: {len(prefs)} rows"
                 + (f" ({sum(prefs.skipped.values())} bad rows skipped: {dict(prefs.skipped)})" if prefs.skipped else "")]
        lines.append("  ".join(f"{k}={v:.4f}" for k, v in m.items() if "/" not in k and k not in ("pairs", "rows")))
        if result.subsets:
            rows = [["subset", "pairs", "accuracy"]]
            rows += [[name, str(int(s["pairs"])), f"{s['accuracy']:.4f}"] for name, s in result.subsets.items()]
            rows.append(["section-weighted", "", f"{m['section_acc']:.4f}"])
            lines.append(table(rows))
        if args.plot:
            lines.append(f"reliability diagram: {plot_reliability(result.reliability, args.plot, title=str(args.data))}")
        payload = {"task": "reward", "data": args.data, "model": args.model, **m,
                   "subsets": result.subsets, "skipped": dict(prefs.skipped)}
        return payload, "\n".join(lines)

    def __call__(self, model: Any, cache: dict[Any, Any] | None = None) -> dict[str, float]:
        result = evaluate_reward(model, self.prefs)
        self.last = result
        return result.metrics


__all__ = [
    "RewardEvaluator",
    "RewardResult",
    "evaluate_reward",
    "expected_calibration_error",
    "plot_reliability",
]
