"""Thin ``nn.Module`` wrappers over :mod:`contrastlib.losses.functional`.

A module only keeps hyper-parameters (and learnable ones, later) and calls the pure
function, so the two cannot drift.
"""

from __future__ import annotations

from torch import Tensor, nn

from contrastlib.losses.functional import info_nce
from contrastlib.registry import LOSSES


@LOSSES.register("info_nce", summary="InfoNCE / NT-Xent / MNRL: in-batch softmax over candidates")
class InfoNCELoss(nn.Module):
    """InfoNCE over (anchors, candidates); see :func:`contrastlib.losses.info_nce`.

    Example::

        loss_fn = InfoNCELoss(temperature=0.05)
        loss = loss_fn(anchor_emb, torch.cat([positive_emb, negative_emb]))
    """

    def __init__(self, temperature: float = 0.05, symmetric: bool = False, normalize: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.symmetric = symmetric
        self.normalize = normalize

    def forward(
        self,
        anchors: Tensor,
        candidates: Tensor,
        positive_mask: Tensor | None = None,
        extra_negatives: Tensor | None = None,
        exclude_mask: Tensor | None = None,
    ) -> Tensor:
        return info_nce(
            anchors,
            candidates,
            positive_mask=positive_mask,
            extra_negatives=extra_negatives,
            exclude_mask=exclude_mask,
            temperature=self.temperature,
            symmetric=self.symmetric,
            normalize=self.normalize,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, symmetric={self.symmetric}"
