"""Module train/eval modes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the module's own mode given back after it: scoring or
    encoding in the middle of a fit must not leave a module in eval mode (its dropout
    off for the rest of the epoch, and Lightning warns about it)."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)
