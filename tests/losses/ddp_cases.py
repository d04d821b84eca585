"""DDP equivalence cases: each builds (loss, inputs) from a full batch and a slice.

Run by ``test_distributed.py`` in one process with the full batch and in two gloo
processes with half the batch each, wrapped in DistributedDataParallel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from contrastlib.losses import (
    AlignUniformLoss,
    CoSENTLoss,
    DCLWLoss,
    DebiasedInfoNCELoss,
    InfoNCELoss,
    MVDHELLoss,
    MVInfoNCELoss,
    NTXentLoss,
    SupConLoss,
    TripletLoss,
)

GLOBAL_BATCH = 8
DIM_IN, DIM_OUT = 6, 5


def make_encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM_IN, 16), nn.Tanh(), nn.Linear(16, DIM_OUT)).double()


def make_data() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "views": torch.randn(3, GLOBAL_BATCH, DIM_IN, generator=g, dtype=torch.float64),
        "negatives": torch.randn(GLOBAL_BATCH, DIM_IN, generator=g, dtype=torch.float64),
        "labels": torch.randint(0, 3, (GLOBAL_BATCH,), generator=g),
    }


Case = Callable[[nn.Module, dict[str, Tensor], slice], Tensor]


def _pair(loss: nn.Module, with_negatives: bool = False) -> Case:
    def run(enc: nn.Module, data: dict[str, Tensor], s: slice) -> Tensor:
        a, p = enc(data["views"][0, s]), enc(data["views"][1, s])
        cands = torch.cat([p, enc(data["negatives"][s])]) if with_negatives else p
        return loss(a, cands)

    return run


def _supcon_labels(enc: nn.Module, data: dict[str, Tensor], s: slice) -> Tensor:
    feats = torch.cat([enc(data["views"][0, s]), enc(data["views"][1, s])])
    labels = data["labels"][s].repeat(2)
    return SupConLoss(0.2)(feats, labels=labels)


def _supcon_uneven_valid(enc: nn.Module, data: dict[str, Tensor], s: slice) -> Tensor:
    """One view, labels chosen so rank 0 holds 3 anchors with positives and rank 1 one:
    a per-rank mean would weight them equally; the global mean weights each anchor once."""
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4])[s]
    return SupConLoss(0.2)(enc(data["views"][0, s]), labels=labels)


def _multiview(loss: nn.Module) -> Case:
    def run(enc: nn.Module, data: dict[str, Tensor], s: slice) -> Tensor:
        return loss(torch.stack([enc(data["views"][v, s]) for v in range(3)]))

    return run


def _info_nce_duplicate_keys(enc: nn.Module, data: dict[str, Tensor], s: slice) -> Tensor:
    """Row 0's negative is row 5's positive text and row 4's negative row 0's: each sits
    on the other rank, so the keys must travel with the gathered candidates."""
    keys = torch.cat([torch.arange(GLOBAL_BATCH)[s], torch.tensor([5, 100, 101, 102, 0, 103, 104, 105])[s]])
    a, p = enc(data["views"][0, s]), enc(data["views"][1, s])
    return InfoNCELoss(0.1)(a, torch.cat([p, enc(data["negatives"][s])]), candidate_keys=keys)


def _cosent(enc: nn.Module, data: dict[str, Tensor], s: slice) -> Tensor:
    """Graded pairs: every rank's pairs are ranked against every other rank's."""
    scores = torch.tensor([0.1, 4.0, 2.5, 3.0, 0.5, 5.0, 1.0, 2.0], dtype=torch.float64)[s]
    return CoSENTLoss(0.05)(enc(data["views"][0, s]), enc(data["views"][1, s]), scores=scores)


CASES: dict[str, Case] = {
    "cosent": _cosent,
    "info_nce_duplicate_keys": _info_nce_duplicate_keys,
    "info_nce_hard_negatives": _pair(InfoNCELoss(0.1), with_negatives=True),
    "info_nce_symmetric": _pair(InfoNCELoss(0.1, symmetric=True), with_negatives=True),
    "info_nce_chunked": _pair(InfoNCELoss(0.1, chunk_size=3), with_negatives=True),
    "nt_xent": _pair(NTXentLoss(0.3)),
    "nt_xent_chunked": _pair(NTXentLoss(0.3, chunk_size=3)),
    "info_nce_chunked_symmetric_diagonal": _pair(InfoNCELoss(0.1, chunk_size=3, symmetric=True)),
    "supcon_labels": _supcon_labels,
    "supcon_uneven_valid": _supcon_uneven_valid,
    "supcon_pairs": _pair(SupConLoss(0.2), with_negatives=True),
    "mv_info_nce": _multiview(MVInfoNCELoss(0.2)),
    "mv_dhel": _multiview(MVDHELLoss(0.2)),
    "dclw": _pair(DCLWLoss(0.2, sigma=0.5), with_negatives=True),
    "debiased_hard": _pair(DebiasedInfoNCELoss(0.3, tau_plus=0.1, beta=0.5)),
    "align_uniform": _pair(AlignUniformLoss()),
    "triplet_batch_hard": _pair(TripletLoss(margin=0.5)),
}
