"""Several training sources as one dataset whose batches each come from one source.

Source ``s``'s row ``i`` is row ``starts[s] + i`` of the whole; a batch of rows (all of one
source: :class:`~contrastlib.samplers.sources.SourcesSampler` forms them so) is fetched
from that source's dataset at once and collated by that source's collator (its prompts,
its columns), then tagged with the source: :class:`Sourced`.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload, runtime_checkable

from torch.utils.data import ConcatDataset


@runtime_checkable
class BatchFetch(Protocol):
    """A dataset that fetches a batch of items at once (torch's ``__getitems__``)."""

    def __getitems__(self, indices: list[int]) -> list[Any]: ...


def starts_of(lengths: Sequence[int]) -> list[int]:
    """Where each of consecutive parts of these lengths starts."""
    return list(itertools.accumulate(lengths[:-1], initial=0)) if lengths else []


class Chained(Sequence[Any]):
    """Sequences one after another, read through (no copy)."""

    def __init__(self, parts: Sequence[Sequence[Any]]) -> None:
        self.parts = list(parts)
        self.starts = starts_of([len(p) for p in self.parts])
        self._len = sum(len(p) for p in self.parts)

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        s = bisect.bisect_right(self.starts, i) - 1
        return self.parts[s][i - self.starts[s]]

    def __iter__(self) -> Iterator[Any]:
        for p in self.parts:
            yield from p


class SourceItems(list[Any]):
    """A batch's items, fetched from one source: ``source`` is its index."""

    def __init__(self, source: int, items: Sequence[Any]) -> None:
        super().__init__(items)
        self.source = source


class SourcesDataset(ConcatDataset[Any]):
    """The sources' datasets one after another (torch's ``ConcatDataset``), fetching a
    batch from its one source at once."""

    def __getitems__(self, indices: list[int]) -> SourceItems:
        s = bisect.bisect_right(self.cumulative_sizes, indices[0])
        start, end = (self.cumulative_sizes[s - 1] if s else 0), self.cumulative_sizes[s]
        if not all(start <= i < end for i in indices):  # the sampler's promise, kept
            raise ValueError(f"a batch mixes sources: rows {min(indices)}..{max(indices)} cross source {s}'s end")
        local = [i - start for i in indices]
        ds = self.datasets[s]
        items = ds.__getitems__(local) if isinstance(ds, BatchFetch) else [ds[i] for i in local]
        return SourceItems(s, items)


@dataclass
class Sourced:
    """A batch and the index of the source its rows came from."""

    source: int
    batch: Any

    def to(self, device: Any) -> Sourced:
        return Sourced(self.source, self.batch.to(device))


class SourcesCollator:
    """Each batch through its source's collator, tagged with the source."""

    def __init__(self, collators: Sequence[Callable[[list[Any]], Any]]) -> None:
        self.collators = list(collators)

    def __call__(self, items: list[Any]) -> Sourced:
        assert isinstance(items, SourceItems), "a SourcesDataset's batch"
        return Sourced(items.source, self.collators[items.source](list(items)))
