"""Losses with graded targets. CoSENT (Su 2022, "CoSENT: a more efficient sentence vector
scheme than Sentence-BERT"; sentence-transformers' ``CoSENTLoss``): graded pairs ranked by
cosine.

For pairs ``(a_i, b_i)`` with gold scores ``s_i`` and cosines ``c_i``::

    loss = log(1 + sum_{(i, j): s_i > s_j} exp((c_j - c_i) / tau))

Every pair scored higher than another must have the higher cosine. It is the same
target-distribution cross-entropy as InfoNCE, over the candidate set ``{no violation} ∪
{violating pair orders}`` with all the target mass on "no violation" (hence the ``0``
logit inside the log-sum-exp). ``tau`` is sentence-transformers' ``1 / scale`` (its default
scale 20 is ``tau = 0.05``). Under DDP the pairs of every rank are ranked together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlib.losses.base import LossInputs, ScaledLoss, two_views
from contrastlib.losses.distributed import gather_no_grad
from contrastlib.losses.functional import full_precision, upcast
from contrastlib.registry import LOSSES


@full_precision
def cosent(anchors: Tensor, positives: Tensor, scores: Tensor, *, temperature: float | Tensor = 0.05) -> Tensor:
    """CoSENT over ``[N, D]`` pairs and their ``[N]`` gold scores (any scale: only their
    order counts). Returns a scalar in float32 (float64 for float64 input)."""
    if anchors.shape != positives.shape or scores.shape != anchors.shape[:1]:
        raise ValueError(f"cosent needs [N, D] pairs and [N] scores, got {tuple(anchors.shape)}, "
                         f"{tuple(positives.shape)} and {tuple(scores.shape)}")
    cos = F.cosine_similarity(upcast(anchors), upcast(positives), dim=-1) / temperature  # [N]
    diff = cos[None, :] - cos[:, None]  # [i, j] = c_j - c_i
    violating = scores.to(cos.device)[:, None] > scores.to(cos.device)[None, :]  # s_i > s_j
    logits = torch.cat([cos.new_zeros(1), diff[violating]])
    return torch.logsumexp(logits, dim=0)


@LOSSES.register("cosent", summary="CoSENT: graded pairs, every higher-scored pair ranked above (needs scores)")
class CoSENTLoss(ScaledLoss):
    """CoSENT; see :func:`cosent`. Takes pairs (anchors, candidates of the same size) and
    ``scores``, one per pair; no hard negatives."""

    accepts = requires = frozenset({"scores"})
    hard_negatives = False

    def __init__(self, temperature: float = 0.05, *, learnable_temperature: bool = False,
                 gather_distributed: bool = True) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)

    def compute(self, x: LossInputs) -> Tensor:
        anchors, positives = two_views(x, "cosent")
        assert x.scores is not None  # (declared: required)
        if self._world()[1] == 1:
            return cosent(anchors, positives, x.scores, temperature=self.temperature())
        # every rank ranks the global batch; DDP's average of the gathered gradients is the
        # gradient of that one loss (losses.distributed)
        return cosent(self._gather(anchors), self._gather(positives), gather_no_grad(x.scores),
                      temperature=self.temperature())
