"""Cross-device candidates, exactly: an autograd-aware all-gather, so every rank's
embeddings get the gradient of the global loss.

* The gather is autograd-aware: the gradient of every rank's loss flows back to the rank
  that produced each embedding (backward = all-reduce of the gathered gradient, then this
  rank's slice). With DDP averaging parameter gradients over ranks this equals
  single-process training on the concatenated batch; a no-grad gather would give
  1/world_size of the true gradient. torch's own ``torch.distributed.nn.functional.
  all_gather`` (deprecated in torch 2.15) returns wrong gradients when the incoming
  gradient is not contiguous (e.g. after a transpose): ours makes it contiguous first.
* Local anchors are scored against global candidates; every positive index and mask is
  offset by ``rank * local_size`` (``eye(B, W*B)`` is wrong on every rank but 0).
* Gathered tensors are made contiguous; all ranks must send equal shapes (checked).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd import Function


def world_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_equal_shapes(x: Tensor, world: int) -> None:
    # On x's device: NCCL (the GPU backend) refuses CPU tensors.
    shape = torch.tensor(list(x.shape), dtype=torch.long, device=x.device)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        raise ValueError(
            f"cross-device gather needs equal shapes on every rank, got {[tuple(s.tolist()) for s in shapes]} "
            "(contrastlib's batch samplers guarantee this; a custom loader must too)"
        )


class _AllGatherWithGrad(Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        rank, world = world_info()
        ctx.rank, ctx.size = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()  # collectives on non-contiguous tensors go wrong
        dist.all_reduce(grad)  # sum over ranks of d loss_r / d gathered
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(x: Tensor, *, check_shapes: bool = True) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping the autograd graph."""
    _, world = world_info()
    if world == 1:
        return x
    if check_shapes:
        _check_equal_shapes(x.detach(), world)
    out: Tensor = _AllGatherWithGrad.apply(x)
    return out


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (labels, ids) from all ranks along dim 0, without gradients."""
    _rank, world = world_info()
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def global_row_mean(per_row: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``per_row[valid]`` over every rank's valid rows, as this rank's share.

    DDP averages gradients over ranks, so each rank returns ``W * local_sum / global_count``:
    the average over ranks is then the mean over all valid rows of the global batch, also
    when ranks hold different numbers of valid rows (a per-rank mean would weight a rank
    with few valid rows as much as one with many).
    """
    _rank, world = world_info()
    local_sum = per_row.masked_fill(~valid, 0.0).sum()
    count = valid.sum().to(per_row.dtype).detach()
    if world == 1:
        return local_sum / count.clamp_min(1)
    total = count.clone()
    dist.all_reduce(total)
    return world * local_sum / total.clamp_min(1)


def place_local_block(mask: Tensor, world: int, rank: int) -> Tensor:
    """``[B, C] -> [B, W*C]``: a local mask placed in this rank's block, zeros elsewhere."""
    if world == 1:
        return mask
    b, c = mask.shape
    out = mask.new_zeros(b, world * c)
    out[:, rank * c : (rank + 1) * c] = mask
    return out
