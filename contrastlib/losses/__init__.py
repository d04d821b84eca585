"""Losses: pure functions over embeddings or scores, thin modules, registry entries.

The shared core is :func:`soft_cross_entropy`: a cross-entropy between a target
distribution over candidates and the softmax of their scores. InfoNCE, NT-Xent and SupCon
are that term with different targets; the other losses change the negative term.
"""

from contrastlib.losses.ati import ATILoss, ati_info_nce, ati_log_g, ati_surrogate
from contrastlib.losses.base import (
    ContrastiveLoss,
    LossContract,
    LossInputs,
    ScaledLoss,
    check_loss,
)
from contrastlib.losses.chunked import chunked_info_nce
from contrastlib.losses.decoupled import (
    DCLLoss,
    DCLWLoss,
    DebiasedInfoNCELoss,
    dcl,
    debiased_info_nce,
    negative_von_mises_fisher_weights,
)
from contrastlib.losses.functional import cosine_scores, info_nce, soft_cross_entropy
from contrastlib.losses.geometry import AlignUniformLoss, align_uniform, alignment, uniformity
from contrastlib.losses.graded import CoSENTLoss, cosent
from contrastlib.losses.info_nce_loss import InfoNCELoss
from contrastlib.losses.margin import TripletLoss, triplet_margin
from contrastlib.losses.multiview import MVDHELLoss, MVInfoNCELoss, mv_dhel, mv_info_nce
from contrastlib.losses.supervised import NTXentLoss, SupConLoss, nt_xent, supcon
from contrastlib.losses.temperature import Temperature

__all__ = [
    "ATILoss",
    "AlignUniformLoss",
    "CoSENTLoss",
    "ContrastiveLoss",
    "DCLLoss",
    "DCLWLoss",
    "DebiasedInfoNCELoss",
    "InfoNCELoss",
    "LossContract",
    "LossInputs",
    "MVDHELLoss",
    "MVInfoNCELoss",
    "NTXentLoss",
    "ScaledLoss",
    "SupConLoss",
    "Temperature",
    "TripletLoss",
    "align_uniform",
    "alignment",
    "ati_info_nce",
    "ati_log_g",
    "ati_surrogate",
    "check_loss",
    "chunked_info_nce",
    "cosent",
    "cosine_scores",
    "dcl",
    "debiased_info_nce",
    "info_nce",
    "mv_dhel",
    "mv_info_nce",
    "negative_von_mises_fisher_weights",
    "nt_xent",
    "soft_cross_entropy",
    "supcon",
    "triplet_margin",
    "uniformity",
]
