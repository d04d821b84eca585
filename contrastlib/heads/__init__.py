"""Preference / reward heads on embeddings, registered by name (``contrastlib list``).

Every head maps response embeddings to rewards (or, for GPM, pairs to preference
log-odds) and computes its loss with :mod:`contrastlib.losses.preference`; see
:mod:`contrastlib.heads.base` for the shared interface.
"""

from contrastlib.heads.base import Preferences, RewardHead, fit_head, reward_network
from contrastlib.heads.pluralistic import GPMHead, MixtureBTHead, PALHead
from contrastlib.heads.scalar import (
    BCOHead,
    BradleyTerryHead,
    GaussianHead,
    InfoNCAHead,
    MultiObjectiveHead,
    NCAHead,
    PlackettLuceHead,
    RobustBradleyTerryHead,
)

__all__ = [
    "BCOHead",
    "BradleyTerryHead",
    "GPMHead",
    "GaussianHead",
    "InfoNCAHead",
    "MixtureBTHead",
    "MultiObjectiveHead",
    "NCAHead",
    "PALHead",
    "PlackettLuceHead",
    "Preferences",
    "RewardHead",
    "RobustBradleyTerryHead",
    "fit_head",
    "reward_network",
]
