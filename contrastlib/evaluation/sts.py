"""STS evaluation: Spearman and Pearson (x100) of cosine similarity against gold scores.

Takes any encoder with an ``encode(texts) -> [N, D]`` method; no Lightning module needed.
Each distinct sentence is encoded once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef

from contrastlib.data.prompts import with_prompt
from contrastlib.data.readers import ScoredPairs
from contrastlib.encoders.base import Encoder
from contrastlib.evaluation.base import Evaluation
from contrastlib.losses.geometry import alignment, uniformity
from contrastlib.registry import EVALUATIONS


@dataclass(frozen=True)
class STSResult:
    spearman: float  # x100
    pearson: float  # x100
    n_pairs: int
    #: Wang and Isola's geometry, as reported by SimCSE: alignment over pairs with gold
    #: score >= ``positive_threshold`` and uniformity over every distinct sentence (lower
    #: is better for both). NaN when there is no positive pair.
    alignment: float = float("nan")
    uniformity: float = float("nan")
    #: Spearman x100 of each embedding prefix (first ``d`` dimensions, renormalised) asked
    #: for: a Matryoshka-trained encoder's sizes.
    spearman_by_dim: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sts_correlations(similarities: torch.Tensor, gold: torch.Tensor) -> STSResult:
    """Spearman/Pearson x100 between predicted similarities and gold scores (float64)."""
    pred, target = similarities.double(), gold.double()
    return STSResult(
        spearman=100 * float(spearman_corrcoef(pred, target)),
        pearson=100 * float(pearson_corrcoef(pred, target)),
        n_pairs=int(pred.numel()),
    )


def evaluate_sts(
    encoder: Any, data: ScoredPairs, *, positive_threshold: float = 4.0, dims: Sequence[int] = (),
    **encode_kwargs: Any,
) -> STSResult:
    """Encode both sides of every pair, score by cosine similarity, correlate with gold.

    ``encoder`` is anything with ``encode(texts, **encode_kwargs) -> [N, D]`` (a
    TextEncoder, a SentenceTransformer, a cache): evaluation needs no Lightning module.
    ``dims``: prefix sizes scored as well, from the same embeddings (``spearman_by_dim``).
    """
    unique = list(dict.fromkeys(data.sentences1 + data.sentences2))
    where = {s: i for i, s in enumerate(unique)}
    emb = torch.as_tensor(np.asarray(encoder.encode(unique, **encode_kwargs)), dtype=torch.float32)
    e1 = emb[[where[s] for s in data.sentences1]]
    e2 = emb[[where[s] for s in data.sentences2]]
    cos = F.cosine_similarity(e1.double(), e2.double(), dim=-1)
    gold = torch.tensor(data.scores, dtype=torch.float64)
    result = sts_correlations(cos, gold)
    positive = gold >= positive_threshold
    align = float(alignment(e1[positive], e2[positive])) if bool(positive.any()) else float("nan")
    by_dim = {int(d): sts_correlations(F.cosine_similarity(e1[:, :d].double(), e2[:, :d].double(), dim=-1),
                                       gold).spearman for d in dims}
    return replace(result, alignment=align, uniformity=float(uniformity(emb)), spearman_by_dim=by_dim)


def _prompted(data: ScoredPairs, prompt: str | None) -> ScoredPairs:
    """``data`` with ``prompt`` before both sentences of every pair (as it is without one)."""
    if not prompt:
        return data
    return replace(data, sentences1=with_prompt(data.sentences1, prompt), sentences2=with_prompt(data.sentences2, prompt))


@EVALUATIONS.register("sts", summary="Spearman / Pearson x100 of cosine similarity on scored pairs")
@dataclass
class STSEvaluator(Evaluation):
    """``eval.sts``: one scored-pair file, read when built (before any model loads)."""

    takes: ClassVar[str] = "strings"
    main_metric: ClassVar[str] = "spearman"
    name: str
    data: ScoredPairs
    batch_size: int = 128
    precision: str = "fp32"

    @classmethod
    def from_entry(cls, entry: Any, *, batch_size: int, precision: str) -> STSEvaluator:
        from contrastlib.data.readers import read_scored_pair_files

        return cls(str(entry), read_scored_pair_files([str(entry)]), batch_size=batch_size, precision=precision)

    cli_help: ClassVar[str | None] = "Spearman/Pearson (x100) of cosine similarity on scored pairs"

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", "-m", required=True, help="HF id, model dir, sentence-transformers dir, run dir or .ckpt")
        p.add_argument("--data", "-d", required=True, action="append",
                       help="scored-pair TSV (sentence1 sentence2 score) or a directory of them; repeat to pool files")
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        p.add_argument("--prompt", help="text put before both sentences of every pair (e.g. 'query: ')")

    @classmethod
    def run_cli(cls, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
        from contrastlib.data.readers import read_scored_pair_files
        from contrastlib.loading import load_encoder

        data = read_scored_pair_files(args.data)  # bad data fails before the model loads
        data = _prompted(data, args.prompt)
        encoder = load_encoder(args.model)
        r = evaluate_sts(encoder, data, batch_size=args.batch_size, precision=args.precision,
                         show_progress_bar=not args.no_progress, dims=encoder.matryoshka_dims)
        text = (f"STS  {', '.join(args.data)}  pairs={r.n_pairs}  spearman={r.spearman:.2f}  pearson={r.pearson:.2f}  "
                f"alignment={r.alignment:.3f}  uniformity={r.uniformity:.3f}"
                + "".join(f"  spearman@{d}={s:.2f}" for d, s in r.spearman_by_dim.items()))
        return {"task": "sts", "data": args.data, "model": args.model, **r.as_dict()}, text

    def __call__(self, encoder: Any, cache: dict[Any, Any] | None = None) -> dict[str, float]:
        dims = encoder.matryoshka_dims if isinstance(encoder, Encoder) else ()
        prompt = encoder.prompts.get("query") if isinstance(encoder, Encoder) else None  # as it trains
        data = _prompted(self.data, prompt)
        r = evaluate_sts(encoder, data, batch_size=self.batch_size, precision=self.precision, dims=dims)
        return {"spearman": r.spearman, "pearson": r.pearson, "n_pairs": r.n_pairs,
                **{f"spearman@{d}": s for d, s in r.spearman_by_dim.items()}}
