"""Lightning modules, one short file per method, built from shared parts."""

from contrastlib.methods.base import ContrastiveModule
from contrastlib.methods.simcse import SimCSE

__all__ = ["ContrastiveModule", "SimCSE"]
