"""SupCon and NT-Xent: InfoNCE over views, with positives from labels or from the view pairing.

Both are :func:`soft_cross_entropy` with the anchor itself excluded from its softmax:
SupCon's target is uniform over every other example with the anchor's label (the
``L_out`` form of Khosla et al. 2020); NT-Xent's is the other view of the same example
(Chen et al. 2020, SimCLR).
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlib.losses.functional import (
    cosine_scores,
    full_precision,
    offset_eye,
    soft_cross_entropy,
)


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
