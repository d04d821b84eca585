"""InfoNCE as a module: :func:`contrastlib.losses.functional.info_nce` with a temperature,
the cross-device gather, a streamed (chunked) form, and copies of a positive masked out."""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlib.losses.base import LossInputs, ScaledLoss, pair_form
from contrastlib.losses.chunked import chunked_info_nce
from contrastlib.losses.distributed import gather_no_grad, place_local_block
from contrastlib.losses.functional import info_nce
from contrastlib.registry import LOSSES


def duplicate_mask(positive_mask: Tensor, keys: Tensor) -> Tensor:
    """``[B, C]`` bool: candidate ``j`` holds the same key as one of anchor ``i``'s
    positives and is not a positive of ``i`` itself. Memory ``B x (distinct keys)``,
    never ``C x C`` (C is every device's candidates)."""
    _, key_id = torch.unique(keys, return_inverse=True)  # [C] -> 0..U-1
    has_key = positive_mask.new_zeros(positive_mask.shape[0], int(key_id.max()) + 1)  # [B, U]
    rows, cols = positive_mask.nonzero(as_tuple=True)
    has_key[rows, key_id[cols]] = True
    return has_key[:, key_id] & ~positive_mask


@LOSSES.register("info_nce", summary="InfoNCE / NT-Xent one-sided / MNRL: anchors vs candidates (+ queue), chunkable")
class InfoNCELoss(ScaledLoss):
    """InfoNCE over (anchors, candidates); see :func:`contrastlib.losses.info_nce`.

    Args:
        temperature: softmax temperature (initial value if learnable).
        symmetric: also score positives against anchors (CLIP-style).
        learnable_temperature: learn a global logit scale (clamped to [0.01, 1]).
        chunk_size: stream the softmax over anchor chunks (memory ``chunk x C``); the
            value equals the plain loss. One positive per anchor.
        gather_distributed: candidates from every device under DDP.
        mask_duplicates: given ``candidate_keys`` (a key per candidate, e.g. a hash of
            its text), drop from anchor ``i``'s softmax every candidate with the same key
            as one of its positives, other than the positives themselves: a copy of the
            positive is never a negative. Keys are gathered across devices with the
            candidates. Default: on, unless ``chunk_size`` is set (the streamed loss
            leaves out at most one column per anchor).

    Example::

        loss_fn = InfoNCELoss(temperature=0.05)
        loss = loss_fn(anchor_emb, torch.cat([positive_emb, hard_negative_emb]))
    """

    accepts = frozenset({"positive_mask", "exclude_mask", "extra_negatives", "candidate_keys"})

    def __init__(
        self,
        temperature: float = 0.05,
        *,
        symmetric: bool = False,
        learnable_temperature: bool = False,
        chunk_size: int | None = None,
        gather_distributed: bool = True,
        normalize: bool = True,
        mask_duplicates: bool | None = None,
    ) -> None:
        super().__init__(temperature, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if mask_duplicates and chunk_size is not None:
            raise ValueError("mask_duplicates needs the unchunked loss (chunk_size: null)")
        self.symmetric, self.chunk_size, self.normalize = symmetric, chunk_size, normalize
        self.mask_duplicates = chunk_size is None if mask_duplicates is None else mask_duplicates

    def _one_way(
        self, anchors: Tensor, candidates: Tensor, positives: Tensor, exclude: Tensor | None, extra: Tensor | None, tau: Tensor | float
    ) -> Tensor:
        if self.chunk_size is None:
            return info_nce(
                anchors, candidates, positive_mask=positives, exclude_mask=exclude,
                extra_negatives=extra, temperature=tau, normalize=self.normalize,
            )
        if not bool((positives.sum(dim=1) == 1).all()):
            raise ValueError("chunked InfoNCE needs exactly one positive per anchor")
        exclude_index = None
        if exclude is not None:
            if not bool((exclude.sum(dim=1) == 1).all()):
                raise ValueError("chunked InfoNCE excludes exactly one candidate per anchor (or none)")
            exclude_index = exclude.float().argmax(dim=1)
        return chunked_info_nce(
            anchors, candidates, temperature=tau, positive_index=positives.float().argmax(dim=1),
            exclude_index=exclude_index, extra_negatives=extra, chunk_size=self.chunk_size, normalize=self.normalize,
        )

    def compute(self, x: LossInputs) -> Tensor:
        anchors, candidates = pair_form(x, "info_nce")
        positive_mask, exclude_mask, extra_negatives = x.positive_mask, x.exclude_mask, x.extra_negatives
        candidate_keys = x.candidate_keys
        b, c = anchors.shape[0], candidates.shape[0]
        tau = self.temperature()
        if not self.mask_duplicates:
            candidate_keys = None
        if self.chunk_size is not None and positive_mask is None and exclude_mask is None:
            return self._chunked_diagonal(anchors, candidates, extra_negatives, tau)
        if positive_mask is None:
            if c < b:
                raise ValueError(f"{c} candidates for {b} anchors: give a positive_mask")
            positive_mask = torch.eye(b, c, dtype=torch.bool, device=anchors.device)
        if candidate_keys is not None and candidate_keys.shape != (c,):
            raise ValueError(f"candidate_keys must be [{c}], got {tuple(candidate_keys.shape)}")
        rank, world = self._world()
        cands = self._gather(candidates)
        pos_all = place_local_block(positive_mask, world, rank)
        excl_all = place_local_block(exclude_mask, world, rank) if exclude_mask is not None else None
        if candidate_keys is not None:
            copies = duplicate_mask(pos_all, gather_no_grad(candidate_keys) if world > 1 else candidate_keys)
            excl_all = copies if excl_all is None else excl_all | copies
        loss = self._one_way(anchors, cands, pos_all, excl_all, extra_negatives, tau)
        if not self.symmetric:
            return loss
        # Reverse direction: local positive candidates against all anchors.
        is_pos = positive_mask.any(dim=0)  # [C]
        anchors_all = self._gather(anchors)
        back_pos = place_local_block(positive_mask.T[is_pos], world, rank)
        back_excl = place_local_block(exclude_mask.T[is_pos], world, rank) if exclude_mask is not None else None
        back = self._one_way(candidates[is_pos], anchors_all, back_pos, back_excl, None, tau)
        return (loss + back) / 2

    def _chunked_diagonal(
        self, anchors: Tensor, candidates: Tensor, extra: Tensor | None, tau: Tensor | float
    ) -> Tensor:
        """Candidate i is anchor i's positive: index vectors only, no [B, C] mask at all."""
        assert self.chunk_size is not None
        b = anchors.shape[0]
        if candidates.shape[0] < b:
            raise ValueError(f"{candidates.shape[0]} candidates for {b} anchors: give a positive_mask")
        rank, _ = self._world()
        local = torch.arange(b, device=anchors.device)
        cands = self._gather(candidates)
        loss = chunked_info_nce(
            anchors, cands, temperature=tau, positive_index=rank * candidates.shape[0] + local,
            extra_negatives=extra, chunk_size=self.chunk_size, normalize=self.normalize,
        )
        if not self.symmetric:
            return loss
        back = chunked_info_nce(
            candidates[:b], self._gather(anchors), temperature=tau, positive_index=rank * b + local,
            chunk_size=self.chunk_size, normalize=self.normalize,
        )
        return (loss + back) / 2

    def extra_repr(self) -> str:
        return f"symmetric={self.symmetric}, chunk_size={self.chunk_size}, {super().extra_repr()}"
