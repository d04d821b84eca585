"""Lightning modules, one short file per method, built from shared parts."""

from contrastlib.methods.base import ContrastiveModule
from contrastlib.methods.moco import MoCo
from contrastlib.methods.simclr import SimCLR
from contrastlib.methods.simcse import SimCSE

__all__ = ["ContrastiveModule", "MoCo", "SimCLR", "SimCSE"]
