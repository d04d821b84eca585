"""The loss of a run on several sources: each source's batches through that source's loss
(``data.train.NAME.loss``), multiplied by its weight (``data.train.NAME.weight``).

Every batch comes from one source; the method says which before it computes the loss
(:meth:`SourceLosses.use_source`). Sources that share a loss section share one loss
module (and so a learnable temperature).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

from torch import Tensor, nn

from contrastlib.losses.base import ContrastiveLoss, LossInputs


class SourceLosses(ContrastiveLoss):
    """``weights[s] * losses[index[s]](x)`` for the batch's source ``s``.

    It accepts what any of its losses accepts, and gives each only the fields it takes.
    """

    def __init__(self, losses: Sequence[ContrastiveLoss], index: Sequence[int], weights: Sequence[float],
                 names: Sequence[str]) -> None:
        super().__init__(gather_distributed=losses[0].gather_distributed)
        if not len(index) == len(weights) == len(names) or not all(0 <= i < len(losses) for i in index):
            raise ValueError("one loss index, weight and name per source")
        self.losses = nn.ModuleList(losses)
        self.index, self.weights, self.names = list(index), [float(w) for w in weights], list(names)
        self.source = 0
        self.accepts = frozenset().union(*(loss.accepts for loss in losses))  # type: ignore[misc]
        self.requires = frozenset()  # type: ignore[misc]  # (each source's loss was checked against its data)
        self.hard_negatives = any(loss.hard_negatives for loss in losses)  # type: ignore[misc]
        self.scaled = all(loss.scaled for loss in losses)  # type: ignore[misc]

    def use_source(self, source: int) -> str:
        """The next batches are source ``source``'s; returns its name."""
        self.source = source
        return self.names[source]

    @property
    def current(self) -> ContrastiveLoss:
        return self.each()[self.index[self.source]]

    def each(self) -> list[ContrastiveLoss]:
        return [cast(ContrastiveLoss, m) for m in self.losses]

    def compute(self, x: LossInputs) -> Tensor:
        loss = self.current
        dropped: dict[str, Any] = {f: None for f in x.given() - loss.accepts}
        out: Tensor = loss(dataclasses.replace(x, **dropped) if dropped else x)
        weight = self.weights[self.source]
        out = out * weight if weight != 1.0 else out
        # the other sources' trainable parameters (a learnable temperature) take part with
        # a zero gradient: DDP (find_unused_parameters off) reduces every parameter each step
        idle = [p for other in self.each() if other is not loss for p in other.parameters() if p.requires_grad]
        return out + sum(0.0 * p.sum() for p in idle) if idle else out

    def own_parameters(self) -> list[nn.Parameter]:
        return [p for loss in self.each() for p in loss.own_parameters()]

    def step_own_parameters(self, grad_scale: float = 1.0) -> None:
        for loss in self.each():
            loss.step_own_parameters(grad_scale)

    def embedding_dims(self) -> tuple[int, ...]:
        """The largest prefix set any source's loss trains (they share one encoder)."""
        return max((loss.embedding_dims() for loss in self.each()), key=len, default=())

    def check_embedding_dim(self, dim: int) -> None:
        for loss in self.each():
            loss.check_embedding_dim(dim)

    def extra_repr(self) -> str:
        return f"sources={self.names}, weights={self.weights}"
