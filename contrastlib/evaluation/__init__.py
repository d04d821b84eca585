"""Evaluations take a model (an encoder with ``encode``, or a reward model), never a
Lightning module. Each is a registered :class:`~contrastlib.evaluation.base.Evaluation`
(``eval.<name>`` in a config, ``contrastlib eval <name>`` on the command line)."""

from contrastlib.evaluation.base import Evaluation, run_evaluations
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

__all__ = [
    "Evaluation",
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
