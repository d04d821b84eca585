"""What every loss module receives and declares.

A loss module receives one :class:`LossInputs`: ``anchors [B, D]`` and ``candidates
[C, D]`` (candidate ``i < B`` is anchor ``i``'s positive; candidates beyond ``B`` are
extra, hard negatives), plus optional fields. Each loss declares, as class attributes:

* ``accepts``: the optional fields it reads; given any other, it raises;
* ``requires``: those of them it cannot do without (ATI's per-example ``ids``);
* ``hard_negatives``: whether candidates beyond the positives are part of the loss;
* ``multi_view``: whether it takes ``V > 2`` views (``anchors [V, B, D]``, no candidates);
* ``scaled``: whether it has a softmax temperature (:class:`ScaledLoss`).

A method says what it yields for a run as a :class:`LossContract`, and
:func:`check_loss` compares the two before any model loads, so a combination either
trains or is refused with a one-line ``loss.name`` error. Calling a loss with tensors,
``loss(anchors, candidates, ids=...)``, is the same as passing ``LossInputs``.

Under DDP, with ``gather_distributed`` on (the default), candidates come from every
device: local anchors against global candidates, indices offset by rank
(:mod:`contrastlib.losses.distributed`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from contrastlib.errors import ConfigError
from contrastlib.losses.distributed import gather_with_grad, world_info
from contrastlib.losses.temperature import Temperature


@dataclass(frozen=True)
class LossInputs:
    """Embeddings (and what else a loss may read) for one step."""

    #: ``[B, D]`` anchors; a multi-view loss also takes ``[V, B, D]`` views here.
    anchors: Tensor
    #: ``[C, D]``: positives first (candidate ``i`` for anchor ``i``), then hard negatives.
    candidates: Tensor | None = None
    #: ``[B]`` dataset row of each anchor (per-example parameters: ATI).
    ids: Tensor | None = None
    #: ``[B + C]`` (or ``[B]`` without candidates) class of each row (SupCon).
    labels: Tensor | None = None
    #: ``[C]`` a key per candidate (a hash of its text): copies of a positive are not negatives.
    candidate_keys: Tensor | None = None
    #: ``[B, C]`` bool: anchor ``i``'s positives (default: candidate ``i``).
    positive_mask: Tensor | None = None
    #: ``[B, C]`` bool: candidates left out of anchor ``i``'s softmax.
    exclude_mask: Tensor | None = None
    #: ``[K, D]`` negatives shared by every anchor (MoCo's queue).
    extra_negatives: Tensor | None = None
    #: ``[B]`` a graded score per (anchor ``i``, candidate ``i``) pair (CoSENT).
    scores: Tensor | None = None

    def given(self) -> frozenset[str]:
        """The optional fields that are set."""
        return frozenset(f.name for f in dataclasses.fields(self)[2:] if vars(self)[f.name] is not None)


#: Every optional field of :class:`LossInputs`.
OPTIONAL_FIELDS = frozenset(f.name for f in dataclasses.fields(LossInputs)[2:])


class ContrastiveLoss(nn.Module):
    """Base of every embedding loss: its declarations and the cross-device switch.

    Subclasses implement :meth:`compute`.
    """

    accepts: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()
    hard_negatives: ClassVar[bool] = True
    multi_view: ClassVar[bool] = False
    scaled: ClassVar[bool] = False

    def __init__(self, *, gather_distributed: bool = True) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        unknown = (cls.accepts | cls.requires) - OPTIONAL_FIELDS
        if unknown:
            raise TypeError(f"{cls.__name__} declares fields LossInputs does not have: {sorted(unknown)}")
        if not cls.requires <= cls.accepts:
            raise TypeError(f"{cls.__name__}.requires must be a subset of its accepts")

    def forward(self, anchors: Tensor | LossInputs, candidates: Tensor | None = None, **optional: Tensor | None) -> Tensor:
        x = anchors if isinstance(anchors, LossInputs) else LossInputs(anchors, candidates, **optional)
        given = x.given()
        name = type(self).__name__
        if given - self.accepts:
            raise ValueError(f"{name} does not take {', '.join(sorted(given - self.accepts))}")
        if self.requires - given:
            raise ValueError(f"{name} needs {', '.join(sorted(self.requires - given))}")
        return self.compute(x)

    def compute(self, x: LossInputs) -> Tensor:
        raise NotImplementedError

    def own_parameters(self) -> list[nn.Parameter]:
        """Parameters the loss updates by its own rule, kept out of the optimizer (ATI's
        per-example temperatures)."""
        return []

    def step_own_parameters(self, grad_scale: float = 1.0) -> None:
        """Update :meth:`own_parameters`; a method calls it before each optimizer step
        (``grad_scale``: an fp16 loss scale the optimizer's gradients were unscaled by)."""

    def embedding_dims(self) -> tuple[int, ...]:
        """Prefix sizes of the embedding the loss trains (a Matryoshka loss); () otherwise."""
        return ()

    def check_embedding_dim(self, dim: int) -> None:
        """``ValueError`` when the loss cannot train embeddings of ``dim`` dimensions
        (called once the encoder is built, before training)."""

    def _world(self) -> tuple[int, int]:
        return world_info() if self.gather_distributed else (0, 1)

    def _gather(self, x: Tensor) -> Tensor:
        return gather_with_grad(x) if self._world()[1] > 1 else x

    def extra_repr(self) -> str:
        return f"gather_distributed={self.gather_distributed}"


class ScaledLoss(ContrastiveLoss):
    """A loss over softmax logits ``score / temperature`` (fixed or learnable)."""

    scaled = True

    def __init__(self, temperature: float = 0.05, *, learnable_temperature: bool = False,
                 gather_distributed: bool = True) -> None:
        super().__init__(gather_distributed=gather_distributed)
        self.temperature = Temperature(temperature, learnable=learnable_temperature)


def two_views(x: LossInputs, loss: str) -> tuple[Tensor, Tensor]:
    """``(anchors, candidates)`` of a loss that takes two views of the same examples."""
    b = x.anchors.shape[0]
    if x.candidates is None or x.candidates.shape[0] != b:
        got = "no" if x.candidates is None else x.candidates.shape[0]
        raise ValueError(
            f"{loss} takes two views of the same examples ([B, D] each); got {b} anchors and "
            f"{got} candidates (hard negatives are not part of this loss: "
            "train on pairs, or pick a loss that takes them, e.g. info_nce)"
        )
    return x.anchors, x.candidates


def pair_form(x: LossInputs, loss: str) -> tuple[Tensor, Tensor]:
    """``(anchors, candidates)``; a loss that needs candidates says so."""
    if x.candidates is None:
        raise ValueError(f"{loss} takes (anchors, candidates)")
    return x.anchors, x.candidates


@dataclass(frozen=True)
class LossContract:
    """What a method yields to its loss in a run (see :func:`check_loss`)."""

    #: Optional :class:`LossInputs` fields the method can fill when the loss accepts them.
    provides: frozenset[str] = frozenset()
    #: Fields the method always passes: the loss must accept them (MoCo v2's queue).
    passes: frozenset[str] = frozenset()
    #: Candidates beyond the positives (hard negatives) are in the data.
    hard_negatives: bool = False
    #: Views per example (more than 2 need a ``multi_view`` loss).
    views: int = 2
    #: The method reads the loss's temperature (MoCo v3's ``2 tau`` factor).
    scaled: bool = False
    #: Whether the loss takes part in training at all.
    used: bool = True
    #: Who yields it, for messages (``method 'simcse'``, ``data.train``).
    who: str = "the method"


def check_loss(loss_cls: type[ContrastiveLoss], name: str, contract: LossContract) -> None:
    """Refuse, before any model loads, a loss that cannot take what the method gives."""
    if not contract.used:
        return
    missing = loss_cls.requires - contract.provides - contract.passes
    if missing:
        offered = ", ".join(sorted(contract.provides | contract.passes)) or "nothing beyond anchors and candidates"
        raise ConfigError(f"loss.name: loss {name!r} needs {', '.join(sorted(missing))}, and {contract.who} gives {offered}")
    refused = contract.passes - loss_cls.accepts
    if refused:
        takers = ", ".join(f"{f}" for f in sorted(refused))
        raise ConfigError(f"loss.name: {contract.who} passes {takers} to its loss, which loss {name!r} does not take")
    if contract.hard_negatives and not loss_cls.hard_negatives:
        raise ConfigError(
            f"loss.name: loss {name!r} takes two views of the same examples, but {contract.who} gives hard "
            "negatives too: they would have no place in the loss (train on pairs, or use a loss that takes hard "
            "negatives, e.g. info_nce, supcon, dcl, debiased, triplet)"
        )
    if contract.views > 2 and not loss_cls.multi_view:
        raise ConfigError(f"loss.name: {contract.views} views need a multi-view loss (mv_info_nce, mv_dhel), not {name!r}")
    if contract.scaled and not loss_cls.scaled:
        raise ConfigError(f"loss.name: {contract.who} uses the loss's temperature, and loss {name!r} has none")
