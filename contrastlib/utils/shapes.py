"""Batch widths and row chunks shared by inference encoding and training chunks."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def padded_width(longest: int, multiple: int | None, cap: int) -> int:
    """The width a batch whose longest row has ``longest`` tokens is padded to: rounded up
    to a multiple of ``multiple`` (None: ``longest`` itself), never past ``cap`` (the
    encoder's window) nor below ``longest``. A few distinct widths instead of one per
    length is what lets CPU kernels and the allocator reuse their buffers."""
    if not multiple:
        return longest
    return min(-(-longest // multiple) * multiple, max(cap, longest))


def row_chunks(
    lengths: Sequence[int], max_rows: int | None, token_budget: int | None, width: Callable[[int], int]
) -> list[tuple[int, int]]:
    """``(start, end)`` bounds cutting rows of ``lengths`` (in the order they will be
    batched) into consecutive chunks of at most ``max_rows`` rows (None: no limit) whose
    rows x ``width(longest)`` stays within ``token_budget`` (None: no cap); a chunk always
    holds at least one row. Shared by inference batches and training chunks."""
    bounds: list[tuple[int, int]] = []
    n, start = len(lengths), 0
    while start < n:
        end, longest = start + 1, lengths[start]
        while end < n and (max_rows is None or end - start < max_rows):
            longest_next = max(longest, lengths[end])
            if token_budget is not None and (end - start + 1) * width(longest_next) > token_budget:
                break
            longest, end = longest_next, end + 1
        bounds.append((start, end))
        start = end
    return bounds
