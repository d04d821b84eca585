"""Evaluators take any encoder (an object with ``encode``), never a Lightning module.

:data:`EVALUATIONS` maps each ``eval.*`` list in a config to its evaluator; a method
declares which of them apply to it (``evaluations``).
"""

from collections.abc import Callable
from typing import Any

from contrastlib.evaluation.knn import ImageSetEvaluator, KNNEvaluator, KNNResult, knn_classify
from contrastlib.evaluation.linear import LinearEvaluator, LinearResult, linear_probe
from contrastlib.evaluation.retrieval import (
    RetrievalEvaluator,
    RetrievalResult,
    evaluate_retrieval,
    mean_metrics,
    query_metrics,
)
from contrastlib.evaluation.reward import RewardEvaluator, RewardResult, evaluate_reward
from contrastlib.evaluation.sts import STSEvaluator, STSResult, evaluate_sts, sts_correlations

#: ``eval.<kind>`` -> a builder from one file (read at once: bad data fails before work).
EVALUATIONS: dict[str, Callable[..., Any]] = {
    "sts": STSEvaluator.from_file,
    "retrieval": RetrievalEvaluator.from_spec,
    "knn": KNNEvaluator.from_spec,
    "linear": LinearEvaluator.from_spec,
    "reward": RewardEvaluator.from_file,
}



def run_evaluations(evaluators: list[Any], encoder: Any) -> dict[str, dict[str, float]]:
    """``{name: metrics}`` of every evaluator on ``encoder``; image evaluators of the same
    set (kNN and linear probe on one test set) share its embeddings within the round."""
    cache: dict[Any, Any] = {}
    return {e.name: e(encoder, cache) if isinstance(e, ImageSetEvaluator) else e(encoder) for e in evaluators}


__all__ = [
    "EVALUATIONS",
    "ImageSetEvaluator",
    "KNNEvaluator",
    "KNNResult",
    "LinearEvaluator",
    "LinearResult",
    "RetrievalEvaluator",
    "RetrievalResult",
    "RewardEvaluator",
    "RewardResult",
    "STSEvaluator",
    "STSResult",
    "evaluate_retrieval",
    "evaluate_reward",
    "evaluate_sts",
    "knn_classify",
    "linear_probe",
    "mean_metrics",
    "query_metrics",
    "run_evaluations",
    "sts_correlations",
]
