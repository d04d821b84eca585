"""SupCon and NT-Xent: InfoNCE over views, with positives from labels or from the view pairing.

Both are :func:`soft_cross_entropy` with the anchor itself excluded from its softmax:
SupCon's target is uniform over every other example with the anchor's label (the
``L_out`` form of Khosla et al. 2020); NT-Xent's is the other view of the same example
(Chen et al. 2020, SimCLR).
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlib.losses.base import LossInputs, ScaledLoss, two_views
from contrastlib.losses.chunked import chunked_info_nce
from contrastlib.losses.distributed import gather_no_grad, global_row_mean
from contrastlib.losses.functional import (
    cosine_scores,
    full_precision,
    offset_eye,
    soft_cross_entropy,
)
from contrastlib.registry import LOSSES


@full_precision
def supcon(
    features: Tensor,
    labels: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    features_all: Tensor | None = None,
    labels_all: Tensor | None = None,
    offset: int = 0,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive Learning"), ``L_out``.

    Args:
        features: ``[N, D]`` local embeddings (all views stacked; views of one example
            share its label).
        labels: ``[N]`` integer class or example ids.
        features_all, labels_all: ``[M, D]``, ``[M]`` candidates (across devices);
            default the local ones. Row ``i`` of ``features`` is row ``offset + i`` of
            ``features_all``.
        reduction: ``"mean"`` over anchors with at least one positive, or ``"none"``
            (``[N]``, zero for anchors without one).
    Returns:
        The loss (see ``reduction``).
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features [N, D] and labels [N] expected, got {tuple(features.shape)}, {tuple(labels.shape)}")
    cand = features if features_all is None else features_all
    cand_labels = labels if labels_all is None else labels_all
    scores = cosine_scores(features, cand, normalize=normalize) / temperature  # [N, M]
    self_mask = offset_eye(features.shape[0], cand.shape[0], offset, device=features.device)
    positives = (labels[:, None] == cand_labels[None, :]) & ~self_mask  # [N, M]
    return soft_cross_entropy(scores, positives, exclude=self_mask, reduction=reduction)


@full_precision
def nt_xent(
    z0: Tensor,
    z1: Tensor,
    *,
    temperature: float | Tensor = 0.5,
    z0_all: Tensor | None = None,
    z1_all: Tensor | None = None,
    offset: int = 0,
    normalize: bool = True,
) -> Tensor:
    """NT-Xent (SimCLR): each of the 2B views against the other 2B - 1, positive = its pair.

    Args:
        z0, z1: ``[B, D]`` two views of the same B examples.
        z0_all, z1_all: ``[M, D]`` the views from every device (default: local);
            local row ``i`` is global row ``offset + i``.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"the two views must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    z0_all = z0 if z0_all is None else z0_all
    z1_all = z1 if z1_all is None else z1_all
    b, m = z0.shape[0], z0_all.shape[0]
    anchors = torch.cat([z0, z1])  # [2B, D]
    candidates = torch.cat([z0_all, z1_all])  # [2M, D]
    # rows: [view 0; view 1] local; columns: [view 0; view 1] of all devices
    first = offset_eye(b, 2 * m, offset, device=z0.device)  # a view-0 row's own column
    second = offset_eye(b, 2 * m, m + offset, device=z0.device)  # ... and its view-1 column
    self_mask = torch.cat([first, second])
    positives = torch.cat([second, first])
    scores = cosine_scores(anchors, candidates, normalize=normalize) / temperature  # [2B, 2M]
    return soft_cross_entropy(scores, positives, exclude=self_mask)


# ---------------------------------------------------------------------------- modules
@LOSSES.register("nt_xent", summary="NT-Xent (SimCLR): 2B views, each against the other 2B-1")
class NTXentLoss(ScaledLoss):
    """NT-Xent; see :func:`nt_xent`. Candidates are the second views.

    ``chunk_size`` streams the ``[2B, 2B]`` softmax in anchor chunks (same value).
    """

    hard_negatives = False

    def __init__(
        self, temperature: float = 0.5, *, learnable_temperature: bool = False, chunk_size: int | None = None,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)
        self.chunk_size = chunk_size

    def compute(self, x: LossInputs) -> Tensor:
        z0, z1 = two_views(x, "nt_xent")
        rank, world = self._world()
        if self.chunk_size is not None:
            b, m = z0.shape[0], z0.shape[0] * world
            local = torch.arange(b, device=z0.device) + rank * b
            return chunked_info_nce(
                torch.cat([z0, z1]), torch.cat([self._gather(z0), self._gather(z1)]), temperature=self.temperature(),
                positive_index=torch.cat([local + m, local]), exclude_index=torch.cat([local, local + m]),
                chunk_size=self.chunk_size,
            )
        return nt_xent(
            z0, z1, temperature=self.temperature(), z0_all=self._gather(z0), z1_all=self._gather(z1),
            offset=rank * z0.shape[0],
        )


@LOSSES.register("supcon", summary="SupCon: every same-label example is a positive (L_out)")
class SupConLoss(ScaledLoss):
    """SupCon; see :func:`supcon`.

    ``labels`` gives each row of ``[anchors; candidates]`` (or of ``anchors`` alone) its
    class. Without labels (the pair form), anchor ``i`` and candidate ``i`` share a label
    and extra candidates are negatives (labels made unique across devices).
    """

    accepts = frozenset({"labels"})

    def __init__(self, temperature: float = 0.1, *, learnable_temperature: bool = False, gather_distributed: bool = True) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)

    def compute(self, x: LossInputs) -> Tensor:
        anchors, candidates, labels = x.anchors, x.candidates, x.labels
        rank, world = self._world()
        features = anchors if candidates is None else torch.cat([anchors, candidates])
        n = features.shape[0]
        if labels is None:
            if candidates is None:
                raise ValueError("supcon needs labels, or (anchors, candidates) pairs")
            b = anchors.shape[0]
            ids = torch.arange(n, device=anchors.device)
            ids[b : 2 * b] = torch.arange(min(b, candidates.shape[0]), device=anchors.device)
            labels = ids + rank * n  # unique per device
        elif labels.shape[0] != n:
            raise ValueError(f"labels must have {n} entries, got {labels.shape[0]}")
        labels_all = gather_no_grad(labels) if world > 1 else labels
        per_row = supcon(
            features, labels, temperature=self.temperature(), features_all=self._gather(features),
            labels_all=labels_all, offset=rank * n, reduction="none",
        )
        # an anchor counts if some other row of the global batch shares its label
        valid = (labels[:, None] == labels_all[None, :]).sum(dim=1) > 1
        return global_row_mean(per_row, valid)
