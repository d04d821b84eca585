"""STS evaluation: Spearman and Pearson (x100) of cosine similarity against gold scores.

Takes any encoder with an ``encode(texts) -> [N, D]`` method; no Lightning module needed.
Each distinct sentence is encoded once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

from contrastlib.data.readers import ScoredPairs


@dataclass(frozen=True)
class STSResult:
    spearman: float  # x100
    pearson: float  # x100
    n_pairs: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def sts_correlations(similarities: torch.Tensor, gold: torch.Tensor) -> STSResult:
    """Spearman/Pearson x100 between predicted similarities and gold scores (float64)."""
    pred, target = similarities.double(), gold.double()
    return STSResult(
        spearman=100 * float(spearman_corrcoef(pred, target)),
        pearson=100 * float(pearson_corrcoef(pred, target)),
        n_pairs=int(pred.numel()),
    )


def evaluate_sts(encoder: Any, data: ScoredPairs, **encode_kwargs: Any) -> STSResult:
    """Encode both sides of every pair, score by cosine similarity, correlate with gold.

    ``encoder`` is anything with ``encode(texts, **encode_kwargs) -> [N, D]`` (a
    TextEncoder, a SentenceTransformer, a cache): evaluation needs no Lightning module.
    """
    unique = list(dict.fromkeys(data.sentences1 + data.sentences2))
    where = {s: i for i, s in enumerate(unique)}
    emb = torch.as_tensor(np.asarray(encoder.encode(unique, **encode_kwargs)), dtype=torch.float32)
    e1 = emb[[where[s] for s in data.sentences1]]
    e2 = emb[[where[s] for s in data.sentences2]]
    cos = F.cosine_similarity(e1.double(), e2.double(), dim=-1)
    return sts_correlations(cos, torch.tensor(data.scores, dtype=torch.float64))
