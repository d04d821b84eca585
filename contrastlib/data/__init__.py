"""Readers (one per file format), datasets and collators."""

from contrastlib.data.collate import HFTokenize, IndexedRows, TextBatch, TextTupleCollator
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
    "IndexedRows",
    "ScoredPairs",
    "TextBatch",
    "TextTupleCollator",
    "read_records",
    "read_scored_pair_files",
    "read_scored_pairs",
    "read_sentences",
    "read_tuples",
]
