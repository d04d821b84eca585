"""Lightning modules, one short file per method, built from shared parts."""

from contrastlib.methods.base import ContrastiveModule
from contrastlib.methods.moco import MoCo
from contrastlib.methods.reward import RewardMethod, RewardModel
from contrastlib.methods.simclr import SimCLR
from contrastlib.methods.simcse import SimCSE

__all__ = ["ContrastiveModule", "MoCo", "RewardMethod", "RewardModel", "SimCLR", "SimCSE"]
