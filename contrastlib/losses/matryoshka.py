"""Matryoshka representation learning (Kusupati et al. 2022, "Matryoshka Representation
Learning") around any embedding loss: the loss of the embeddings' first ``d`` dimensions
(renormalised), for each ``d`` of ``dims``, weighted and summed, so that a prefix of the
embedding is itself a good embedding (``contrastlib embed --dim d``).

As sentence-transformers' ``MatryoshkaLoss``: the same sum, dimensions sorted from the
largest, each truncation L2-normalised (its ``shrink``), weights 1 by default. Beyond it:
the dimensions are taken one at a time, each one's graph built, differentiated and freed
before the next (a custom autograd function holds only the summed gradients of the
embeddings). The first sentence-transformers version kept one graph per dimension alive
until the backward pass and ran out of memory (their #3107). Under the gradient cache
the embeddings are the cache's leaves, so the cache's memory stays flat as well.

Config: ``loss.matryoshka: {dims: [384, 256, 128, 64], weights: [1, 1, 1, 1]}`` next to the
inner loss's own keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlib.losses.base import ContrastiveLoss, LossInputs

#: LossInputs fields that hold embeddings (truncated per dimension).
EMBEDDING_FIELDS = ("anchors", "candidates", "extra_negatives")


def check_matryoshka(dims: Any, weights: Any = None) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(dims, weights)`` sorted from the largest dimension; ``ValueError("dims: ...")``
    (or ``weights: ...``) for values no encoder could use."""
    if not isinstance(dims, Sequence) or isinstance(dims, str) or not dims:
        raise ValueError(f"dims: a list of embedding sizes, e.g. [384, 256, 128, 64]; got {dims!r}")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"dims: every size must be an integer >= 1, got {list(dims)}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims: a size appears twice in {list(dims)}")
    if weights is None:
        weights = [1.0] * len(dims)
    if not isinstance(weights, Sequence) or isinstance(weights, str) or len(weights) != len(dims):
        raise ValueError(f"weights: one per dimension ({len(dims)}), got {weights!r}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0 for w in weights):
        raise ValueError(f"weights: numbers >= 0, got {list(weights)}")
    pairs = sorted(zip(dims, weights, strict=True), key=lambda p: -p[0])
    return tuple(int(d) for d, _ in pairs), tuple(float(w) for _, w in pairs)


def truncate(x: LossInputs, dim: int) -> LossInputs:
    """``x`` with every embedding cut to its first ``dim`` dimensions and renormalised."""
    cut = {f: F.normalize(v[..., :dim], dim=-1) for f in EMBEDDING_FIELDS if (v := vars(x)[f]) is not None}
    return dataclasses.replace(x, **cut)


class MatryoshkaLoss(ContrastiveLoss):
    """``sum_d weight_d * inner(truncate(x, d))`` over ``dims`` (see the module docstring).

    It declares what ``inner`` declares: it takes what the inner loss takes.
    """

    def __init__(self, inner: ContrastiveLoss, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        super().__init__(gather_distributed=inner.gather_distributed)
        if inner.multi_view:
            raise ValueError("the inner loss takes V views; wrap a loss of (anchors, candidates)")
        if inner.own_parameters():  # ATI: moving averages and temperature steps once per batch
            raise ValueError(f"{type(inner).__name__} keeps per-example state it updates once per step; "
                             "it cannot be computed once per size")
        self.inner = inner
        self.dims, self.weights = check_matryoshka(dims, weights)
        self.accepts, self.requires = inner.accepts, inner.requires  # type: ignore[misc]
        self.hard_negatives, self.scaled = inner.hard_negatives, inner.scaled  # type: ignore[misc]

    def temperature(self) -> Tensor:
        """The inner loss's temperature (a method that reads it, as MoCo v3 does)."""
        return self.inner.temperature()  # type: ignore[operator]

    def own_parameters(self) -> list[nn.Parameter]:
        return self.inner.own_parameters()

    def step_own_parameters(self, grad_scale: float = 1.0) -> None:
        self.inner.step_own_parameters(grad_scale)

    def embedding_dims(self) -> tuple[int, ...]:
        return self.dims

    def check_embedding_dim(self, dim: int) -> None:
        """``ValueError`` when a size exceeds the encoder's ``dim``."""
        if self.dims[0] > dim:
            raise ValueError(f"dims: {self.dims[0]} is more than the encoder's {dim} dimensions")

    def compute(self, x: LossInputs) -> Tensor:
        names = [f for f in EMBEDDING_FIELDS if vars(x)[f] is not None]
        tensors = [vars(x)[f] for f in names]
        params = [p for p in self.inner.parameters() if p.requires_grad]
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in [*tensors, *params]):
            return sum((w * self.inner.compute(truncate(x, d)) for d, w in zip(self.dims, self.weights, strict=True)),
                       torch.zeros((), device=x.anchors.device))
        out: Tensor = _OneDimensionAtATime.apply(self, x, names, len(tensors), *tensors, *params)
        return out

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}, weights={list(self.weights)}"


class _OneDimensionAtATime(torch.autograd.Function):
    """The weighted sum over dimensions whose backward returns gradients summed during the
    forward pass, one dimension's graph at a time."""

    @staticmethod
    def forward(ctx: Any, owner: MatryoshkaLoss, x: LossInputs, names: list[str], n: int, *inputs: Tensor) -> Tensor:
        embeddings, params = inputs[:n], inputs[n:]
        # float32 leaves: the gradients are summed here before any loss scale (16-mixed)
        # is applied, where float16 would flush the small ones to zero; the inner losses
        # compute in float32 anyway. backward casts each gradient to its input's dtype.
        leaves = [(t.detach().float() if t.dtype in (torch.float16, torch.bfloat16) else t.detach())
                  .requires_grad_(t.requires_grad) for t in embeddings]
        wrt = [t for t in [*leaves, *params] if t.requires_grad]
        grads = [torch.zeros_like(t) for t in wrt]
        total = torch.zeros((), dtype=torch.float32, device=x.anchors.device)
        with torch.enable_grad():
            base = dataclasses.replace(x, **dict(zip(names, leaves, strict=True)))
            for d, w in zip(owner.dims, owner.weights, strict=True):
                loss = w * owner.inner.compute(truncate(base, d))
                for g, part in zip(grads, torch.autograd.grad(loss, wrt, allow_unused=True), strict=True):
                    if part is not None:
                        g.add_(part)
                total = total + loss.detach().float()
        ctx.wants = [t.requires_grad for t in [*leaves, *params]]
        ctx.dtypes = [t.dtype for t in [*embeddings, *params]]
        ctx.save_for_backward(*grads)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        grads = [(next(saved) * grad_out).to(dtype) if wants else None
                 for wants, dtype in zip(ctx.wants, ctx.dtypes, strict=True)]
        return (None, None, None, None, *grads)
