"""What every reward head shares: the batch it reads, the reward network, and training
on fixed embeddings.

A head maps response embeddings ``[N, D]`` to rewards and turns a batch of preferences
into a loss through :mod:`contrastlib.losses.preference`. It never sees an encoder or
text: the reward method embeds (or looks up cached embeddings) and hands the head
tensors.

Data kinds (``trains_on``):

* ``pairs``: chosen and rejected responses, optional ``margin``, ``strength`` (soft label),
  ``user`` and ``objective`` per pair;
* ``lists``: ``K`` responses per prompt with their scores (``mask`` marks real ones);
* ``unpaired``: single responses with a thumbs-up/down ``label``.

The reward method converts between kinds where that loses nothing (a pair is a list of
two; a pair is a thumbs-up and a thumbs-down; a scored list is every ordered pair), so a
head declares what it trains on and not which files it can read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn


@dataclass
class Preferences:
    """A batch of preferences, as embeddings (``D`` = embedding size).

    Pairs: ``chosen``, ``rejected`` ``[B, D]``. Lists: ``responses`` ``[B, K, D]``,
    ``mask`` ``[B, K]``, ``scores`` ``[B, K]``. Unpaired: ``responses`` ``[B, D]``,
    ``label`` ``[B]``.
    """

    kind: str
    chosen: Tensor | None = None
    rejected: Tensor | None = None
    responses: Tensor | None = None
    mask: Tensor | None = None
    scores: Tensor | None = None
    label: Tensor | None = None
    margin: Tensor | None = None
    strength: Tensor | None = None
    #: ``[B]`` long: the user of each row (per-user heads), ``-1``: unknown.
    user: Tensor | None = None
    #: ``[B]`` long: which reward component the row's label is about (multi-objective),
    #: ``-1``: the combined reward.
    objective: Tensor | None = None

    def to(self, device: torch.device | str) -> Preferences:
        moved = {f.name: vars(self)[f.name] for f in fields(self)}
        changes: dict[str, Any] = {k: v.to(device) for k, v in moved.items() if isinstance(v, Tensor)}
        return replace(self, **changes)

    def __len__(self) -> int:
        first = self.chosen if self.kind == "pairs" else self.responses
        assert first is not None
        return int(first.shape[0])

    def select(self, rows: Tensor) -> Preferences:
        """The batch's rows ``rows`` (an index or a bool mask over ``B``)."""
        values = {f.name: vars(self)[f.name] for f in fields(self)}
        changes: dict[str, Any] = {k: v[rows] for k, v in values.items() if isinstance(v, Tensor)}
        return replace(self, **changes)


def reward_network(dim: int, out: int = 1, *, hidden: int | None = None, dropout: float = 0.0) -> nn.Module:
    """``Linear(dim, out)``, or ``Linear -> GELU -> Dropout -> Linear`` with ``hidden`` units."""
    if hidden is None:
        return nn.Linear(dim, out)
    if hidden < 1:
        raise ValueError(f"hidden must be >= 1 or null, got {hidden}")
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class RewardHead(nn.Module):
    """Base of every head.

    Subclasses set ``trains_on`` and implement :meth:`reward` (scalar heads) or
    :meth:`prefer` (heads whose preferences are not a scalar's order), and :meth:`loss`.
    ``dim`` (the embedding size) and, for per-user heads, ``num_users`` are supplied by
    the reward method; every other argument is the head's config (``method.head.*``).
    """

    #: The data kind the loss reads: "pairs", "lists" or "unpaired".
    trains_on: ClassVar[str] = "pairs"
    #: Whether :meth:`reward` is defined (GPM's preferences are not a scalar's order).
    scalar: ClassVar[bool] = True
    #: Whether the head keeps per-user parameters (it is then given ``num_users``).
    per_user: ClassVar[bool] = False
    #: Learns a vector of rewards, one per objective (takes ``objectives``; the data's
    #: objectives fill it in), scalarised by a direction (:meth:`set_direction`).
    vector: ClassVar[bool] = False
    #: A vector head's components.
    objectives: Sequence[str] = ()

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim

    def reward(self, emb: Tensor, user: Tensor | None = None) -> Tensor:
        """``[N, D] -> [N]`` reward of each response (for ``user``, per-user heads)."""
        raise NotImplementedError(f"{type(self).__name__} has no scalar reward; compare pairs with prefer()")

    def prefer(self, a: Tensor, b: Tensor, user: Tensor | None = None) -> Tensor:
        """``[N]`` log-odds that response ``a[i]`` is preferred to ``b[i]``."""
        return self.reward(a, user) - self.reward(b, user)

    def loss(self, batch: Preferences) -> Tensor:
        raise NotImplementedError

    def set_direction(self, direction: Sequence[float]) -> None:
        """A vector head's weights of its objectives in the scalar reward."""
        raise NotImplementedError(f"{type(self).__name__} learns one reward, not one per objective")

    def extra_state(self) -> dict[str, Any]:
        """Plain values saved beside the weights at export (``head.json``)."""
        return {}


def fit_head(
    head: nn.Module,
    batch: Preferences,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    parameters: Sequence[Tensor] | None = None,
    loss_fn: Callable[[Preferences], Tensor] | None = None,
) -> list[float]:
    """Full-batch AdamW on fixed embeddings: the few-shot adaptation of per-user heads,
    and small experiments. Returns the loss at every step."""
    params = parameters if parameters is not None else [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    compute: Callable[[Preferences], Tensor] = loss_fn or cast(Any, head).loss
    history = []
    head.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = compute(batch)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    head.eval()
    return history
