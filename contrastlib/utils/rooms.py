"""Importing a whole room (a package of the library), so that what its modules register
is in the registries."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def register_room(room: ModuleType) -> None:
    """Import every module of the package ``room`` (its registrations run)."""
    for info in pkgutil.iter_modules(room.__path__, prefix=f"{room.__name__}."):
        importlib.import_module(info.name)
