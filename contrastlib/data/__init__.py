"""Readers (one per file format), datasets and collators."""

from contrastlib.data.collate import HFTokenize, TextTupleCollator
from contrastlib.data.readers import (
    ScoredPairs,
    read_records,
    read_scored_pair_files,
    read_scored_pairs,
    read_sentences,
    read_tuples,
)

__all__ = [
    "HFTokenize",
    "ScoredPairs",
    "TextTupleCollator",
    "read_records",
    "read_scored_pair_files",
    "read_scored_pairs",
    "read_sentences",
    "read_tuples",
]
