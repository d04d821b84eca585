"""Import every module of the rooms that register components, so the registries are
complete: a new method, loss, sampler, encoder, head or evaluation file registers itself
by being there, with no shared list to edit."""

from __future__ import annotations

from contrastlib import encoders, evaluation, heads, losses, methods, samplers
from contrastlib.utils.rooms import register_room

for _room in (encoders, evaluation, heads, losses, methods, samplers):
    register_room(_room)
