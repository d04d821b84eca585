"""Evaluators take any encoder (an object with ``encode``), never a Lightning module."""

from contrastlib.evaluation.sts import STSResult, evaluate_sts, sts_correlations

__all__ = ["STSResult", "evaluate_sts", "sts_correlations"]
