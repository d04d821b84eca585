"""Typed dataclass configs, YAML loading, dotlist overrides and validation."""

from contrastlib.config.load import load_config, to_yaml, validate
from contrastlib.config.schema import RunConfig

__all__ = ["RunConfig", "load_config", "to_yaml", "validate"]
