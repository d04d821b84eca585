"""InfoNCE whose extra memory grows with ``chunk x C``, not ``B x C``.

The plain loss materialises the ``[B, C]`` logits, their softmax and its gradient: at
B = C = 32,768 that is 4 GiB per copy in float32. Here the forward streams the
log-sum-exp over anchor chunks and keeps only ``lse [B]``; the backward recomputes each
chunk's logits and accumulates

    dL/da_i = (softmax_i - onehot_i) @ C / B,   dL/dC += (softmax - onehot)^T @ a / B

chunk by chunk. The result equals :func:`info_nce` (tested to 1e-5 with gradients).
Supports one positive per anchor (by index), an optional excluded column per anchor
(self-similarity) and extra negatives; temperature gradients flow through the scaled
anchors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from contrastlib.losses.functional import autocast_off, full_precision


class _StreamedCrossEntropy(Function):
    """mean_i [ logsumexp_j(a_i . c_j) - a_i . c_{pos_i} ], excluding (i, excl_i) if given."""

    @staticmethod
    def forward(
        ctx: Any, a: Tensor, c: Tensor, pos: Tensor, excl: Tensor | None, chunk: int
    ) -> Tensor:
        b = a.shape[0]
        lse = torch.empty(b, dtype=a.dtype, device=a.device)
        for s in range(0, b, chunk):
            logits = a[s : s + chunk] @ c.T  # [chunk, C]
            if excl is not None:
                rows = torch.arange(logits.shape[0], device=a.device)
                logits[rows, excl[s : s + chunk]] = torch.finfo(a.dtype).min
            lse[s : s + chunk] = torch.logsumexp(logits, dim=1)
        positive = (a * c[pos]).sum(dim=1)  # [B]
        ctx.save_for_backward(a, c, pos, lse, excl if excl is not None else torch.empty(0, dtype=torch.long))
        ctx.chunk, ctx.has_excl = chunk, excl is not None
        return (lse - positive).mean()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        # The forward ran with autocast off (chunked_info_nce); so must the backward, or
        # its softmax would be recomputed in bf16 and not match the forward's lse.
        with autocast_off(grad.device.type):
            return _StreamedCrossEntropy._backward(ctx, grad)

    @staticmethod
    def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        a, c, pos, lse, excl = ctx.saved_tensors
        b, chunk = a.shape[0], ctx.chunk
        scale = grad / b
        grad_a = torch.empty_like(a)
        grad_c = torch.zeros_like(c)
        for s in range(0, b, chunk):
            a_chunk = a[s : s + chunk]
            n = a_chunk.shape[0]
            rows = torch.arange(n, device=a.device)
            logits = a_chunk @ c.T  # [chunk, C]
            if ctx.has_excl:
                logits[rows, excl[s : s + chunk]] = torch.finfo(a.dtype).min
            p = torch.exp(logits - lse[s : s + chunk, None])  # softmax, [chunk, C]
            p[rows, pos[s : s + chunk]] -= 1.0
            p *= scale
            grad_a[s : s + chunk] = p @ c
            grad_c += p.T @ a_chunk
        return grad_a, grad_c, None, None, None


@full_precision
def chunked_info_nce(
    anchors: Tensor,
    candidates: Tensor,
    *,
    temperature: float | Tensor = 0.05,
    positive_index: Tensor | None = None,
    exclude_index: Tensor | None = None,
    extra_negatives: Tensor | None = None,
    symmetric: bool = False,
    chunk_size: int = 1024,
    normalize: bool = True,
) -> Tensor:
    """Memory-lean InfoNCE; same arguments and value as :func:`info_nce` for one positive.

    Args:
        anchors: ``[B, D]``; candidates: ``[C, D]``.
        positive_index: ``[B]`` column of each anchor's positive (default ``arange(B)``).
        exclude_index: ``[B]`` one column per anchor left out of its softmax, or None.
        extra_negatives: ``[K, D]`` appended to the candidates.
        symmetric: also score each positive against all anchors (averaged).
        chunk_size: anchors per chunk; peak extra memory ~ ``chunk_size x (C + K)`` floats.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype = torch.float64 if anchors.dtype == torch.float64 else torch.float32
    a, c = anchors.to(dtype), candidates.to(dtype)
    if normalize:
        a, c = F.normalize(a, dim=-1), F.normalize(c, dim=-1)
    b = a.shape[0]
    pos = torch.arange(b, device=a.device) if positive_index is None else positive_index
    all_c = c
    if extra_negatives is not None:
        extra = extra_negatives.to(dtype)
        all_c = torch.cat([c, F.normalize(extra, dim=-1) if normalize else extra])
    loss = _StreamedCrossEntropy.apply(a / temperature, all_c, pos, exclude_index, chunk_size)
    if not symmetric:
        return loss
    back = _StreamedCrossEntropy.apply(c[pos] / temperature, a, torch.arange(b, device=a.device), None, chunk_size)
    return (loss + back) / 2
