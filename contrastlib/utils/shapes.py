"""Batch widths shared by inference encoding and training chunks."""

from __future__ import annotations


def padded_width(longest: int, multiple: int | None, cap: int) -> int:
    """The width a batch whose longest row has ``longest`` tokens is padded to: rounded up
    to a multiple of ``multiple`` (None: ``longest`` itself), never past ``cap`` (the
    encoder's window) nor below ``longest``. A few distinct widths instead of one per
    length is what lets CPU kernels and the allocator reuse their buffers."""
    if not multiple:
        return longest
    return min(-(-longest // multiple) * multiple, max(cap, longest))
