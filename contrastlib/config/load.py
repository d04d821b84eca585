"""Load a YAML config plus ``key=value`` overrides into a validated :class:`RunConfig`.

Every problem (unknown or misspelt key, wrong type, missing value, unknown component
name) is raised as :class:`ConfigError` before any work starts, naming the file and line
(for YAML keys) or the override, the key, and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

import contrastlib.components  # noqa: F401  (fills the registries)
from contrastlib.config.build import loss_kwargs
from contrastlib.config.schema import (
    ENCODE_PRECISIONS,
    SCHEDULERS,
    TRAINER_PRECISIONS,
    RunConfig,
)
from contrastlib.errors import ConfigError
from contrastlib.registry import LOSSES, METHODS, POOLINGS


def _yaml_line(path: Path, dotted: str) -> int | None:
    """1-based line of ``dotted`` key in a YAML file, or None."""
    try:
        node = yaml.compose(path.read_text())
    except (yaml.YAMLError, OSError):
        return None
    line = None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if key_node.value == part:
                line = key_node.start_mark.line + 1
                node = value_node
                break
        else:
            return line
    return line


def _section_keys(dotted: str) -> list[str]:
    """The valid keys of the section that holds ``dotted``."""
    node: Any = RunConfig()
    for part in dotted.split(".")[:-1]:
        node = getattr(node, part, None)
        if not dataclasses.is_dataclass(node):
            return []
    return [f.name for f in dataclasses.fields(node)]


def _describe(exc: OmegaConfBaseException) -> tuple[str, str]:
    key = str(getattr(exc, "full_key", "") or "")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ConfigKeyError):
        name = key.rsplit(".", 1)[-1]
        valid = _section_keys(key)
        msg = f"unknown key {key!r}"
        hint = difflib.get_close_matches(name, valid, n=1)
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        if valid:
            msg += f"; valid keys here: {', '.join(valid)}"
        return key, msg
    if isinstance(exc, MissingMandatoryValue):
        return key, f"missing value for {key!r}"
    return key, f"{key}: {first}" if key else first


def _merge(base: DictConfig, other: DictConfig, where: str, yaml_path: Path | None) -> DictConfig:
    try:
        return cast(DictConfig, OmegaConf.merge(base, other))
    except OmegaConfBaseException as exc:
        key, msg = _describe(exc)
        line = _yaml_line(yaml_path, key) if yaml_path is not None and key else None
        prefix = f"{where}:{line}" if line else where
        raise ConfigError(f"{prefix}: {msg}") from None


def _choice(value: str, choices: Sequence[str], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: invalid value {value!r}; valid choices: {', '.join(choices)}")


def validate(cfg: RunConfig) -> None:
    """Checks that a schema cannot express: component names and enumerated strings."""
    METHODS.check(cfg.method.name, key="method.name")
    LOSSES.check(cfg.loss.name, key="loss.name")
    loss_kwargs(cfg.loss)  # every loss setting must be one the chosen loss takes
    if cfg.model.pooling is not None:
        POOLINGS.check(cfg.model.pooling, key="model.pooling")
    _choice(cfg.trainer.precision, TRAINER_PRECISIONS, "trainer.precision")
    _choice(cfg.eval.precision, ENCODE_PRECISIONS, "eval.precision")
    _choice(cfg.optim.scheduler, SCHEDULERS, "optim.scheduler")
    bounded: list[tuple[str, int | None, int]] = [
        ("data.batch_size", cfg.data.batch_size, 1),
        ("model.max_seq_length", cfg.model.max_seq_length, 1),
        ("trainer.accumulate_grad_batches", cfg.trainer.accumulate_grad_batches, 1),
        ("data.num_workers", cfg.data.num_workers, 0),
        ("gradcache.chunk_size", cfg.gradcache.chunk_size, 1),
        ("gradcache.token_budget", cfg.gradcache.token_budget, 1),
    ]
    for key, value, low in bounded:
        if value is not None and value < low:
            raise ConfigError(f"{key}: must be >= {low}, got {value}")
    if cfg.loss.temperature is not None and not cfg.loss.temperature > 0:
        raise ConfigError(f"loss.temperature: must be > 0, got {cfg.loss.temperature}")
    if not cfg.optim.lr > 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.optim.lr}")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Schema <- YAML file <- dotlist overrides, validated; returns a typed RunConfig."""
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(cfg, True)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        cfg = _merge(cfg, OmegaConf.create(raw), str(path), path)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key = item.split("=", 1)[0]
        try:
            dot = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {item!r}: {str(exc).splitlines()[0]}") from None
        cfg = _merge(cfg, dot, f"override {key}", None)
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"missing value for {missing[0]!r} (set it in the YAML or as {missing[0]}=...)")
        obj = cast(RunConfig, OmegaConf.to_object(cfg))
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc)[1]) from None
    validate(obj)
    return obj


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
