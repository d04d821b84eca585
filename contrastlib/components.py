"""Import every module of the rooms that register components, so the registries are
complete: a new method, loss, sampler, encoder, head or evaluation file registers itself by being there,
with no shared list to edit."""

from __future__ import annotations

import importlib
import pkgutil

from contrastlib import encoders, evaluation, heads, losses, methods, samplers

for _room in (encoders, evaluation, heads, losses, methods, samplers):
    for _info in pkgutil.iter_modules(_room.__path__, prefix=f"{_room.__name__}."):
        importlib.import_module(_info.name)
