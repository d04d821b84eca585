"""What reaches the user's terminal: contrastlib's own messages, warnings and progress
bars, not the frameworks' banners ("GPU available: False", "TPU available", tips for other
products, transformers' weight-loading bars) nor deprecation notices that third-party
libraries raise about each other's internals."""

from __future__ import annotations

import logging
import warnings

#: Loggers whose INFO lines are banners, not news about the user's run.
BANNER_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


def quiet_third_party() -> None:
    """Hide framework banners and third-party deprecation warnings (idempotent).
    Warnings raised from contrastlib's own code are kept."""
    for name in BANNER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=category, module=r"contrastlib(\.|$)")
    try:  # transformers' own bars ("Loading weights", "Writing model shards"); ours stay
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
