"""Evaluators take any encoder (an object with ``encode``), never a Lightning module.

:data:`EVALUATIONS` maps each ``eval.*`` list in a config to its evaluator; a method
declares which of them apply to it (``evaluations``).
"""

from collections.abc import Callable
from typing import Any

from contrastlib.evaluation.knn import KNNEvaluator, KNNResult, knn_classify
from contrastlib.evaluation.linear import LinearEvaluator, LinearResult, linear_probe
from contrastlib.evaluation.retrieval import (
    RetrievalEvaluator,
    RetrievalResult,
    evaluate_retrieval,
    mean_metrics,
    query_metrics,
)
from contrastlib.evaluation.sts import STSEvaluator, STSResult, evaluate_sts, sts_correlations

#: ``eval.<kind>`` -> a builder from one file (read at once: bad data fails before work).
EVALUATIONS: dict[str, Callable[..., Any]] = {
    "sts": STSEvaluator.from_file,
    "retrieval": RetrievalEvaluator.from_spec,
    "knn": KNNEvaluator.from_spec,
    "linear": LinearEvaluator.from_spec,
}

__all__ = [
    "EVALUATIONS",
    "KNNEvaluator",
    "KNNResult",
    "LinearEvaluator",
    "LinearResult",
    "RetrievalEvaluator",
    "RetrievalResult",
    "STSEvaluator",
    "STSResult",
    "evaluate_retrieval",
    "evaluate_sts",
    "knn_classify",
    "linear_probe",
    "mean_metrics",
    "query_metrics",
    "sts_correlations",
]
