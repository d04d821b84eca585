"""One registry per kind of component.

A config names a component by string; the registry turns the name into the object and
`contrastlib list` shows what exists. Registration is a decorator next to the definition::

    @LOSSES.register("info_nce", summary="InfoNCE / NT-Xent / MNRL")
    class InfoNCELoss(nn.Module): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from contrastlib.errors import UnknownComponentError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    summary: str


class Registry(Generic[T]):
    """A named mapping from component names to classes or functions."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, summary: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = (obj.__doc__ or "").strip().splitlines()
            self._entries[name] = Entry(name, obj, summary or (doc[0] if doc else ""))
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name].obj
        except KeyError:
            raise UnknownComponentError(self.kind, name, self.names()) from None

    def check(self, name: str, *, key: str | None = None) -> None:
        """Raise a clear error if ``name`` is not registered (``key`` names the config key)."""
        if name not in self._entries:
            raise UnknownComponentError(self.kind, name, self.names(), key=key)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        for name in self.names():
            yield self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries


ENCODERS: Registry[Any] = Registry("encoder")
POOLINGS: Registry[Any] = Registry("pooling")
LOSSES: Registry[Any] = Registry("loss", "losses")
METHODS: Registry[Any] = Registry("method")
SAMPLERS: Registry[Any] = Registry("sampler")
HEADS: Registry[Any] = Registry("head")
EVALUATIONS: Registry[Any] = Registry("evaluation")

ALL: tuple[Registry[Any], ...] = (ENCODERS, POOLINGS, LOSSES, METHODS, SAMPLERS, HEADS, EVALUATIONS)
