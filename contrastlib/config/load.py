"""Load a YAML config plus ``key=value`` overrides into a validated :class:`RunConfig`.

Every problem (unknown or misspelt key, wrong type, missing value, unknown component
name) is raised as :class:`ConfigError` before any work starts, naming the file and line
(for YAML keys) or the override, the key, and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

import contrastlib.components  # noqa: F401  (fills the registries)
from contrastlib.config.build import SectionKeyError, encoder_spec, loss_spec, method_config
from contrastlib.config.schema import (
    ENCODE_PRECISIONS,
    EVAL_SETTINGS,
    OPTIMIZERS,
    PROJECTIONS,
    SCHEDULERS,
    SECTION_SELECTORS,
    TRAINER_PRECISIONS,
    RunConfig,
)
from contrastlib.errors import ConfigError
from contrastlib.registry import EVALUATIONS, SAMPLERS

#: The recipes and the small datasets they need are ``configs/`` and ``datasets/`` at the
#: top of the repository, installed inside the package (``pip install``) as
#: ``contrastlib/configs`` and ``contrastlib/datasets``.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _shipped(name: str) -> Path:
    """The installed copy of a shipped folder, else the source checkout's."""
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name


RECIPES_DIR = _shipped("configs")
BUNDLED_DATA_DIR = _shipped("datasets")


def bundled(relative: str) -> str:
    """``${bundled:nli/snli-dev.tsv}`` in a config: a data file shipped with the package."""
    return str(BUNDLED_DATA_DIR / relative)


OmegaConf.register_new_resolver("bundled", bundled, replace=True)


def recipes() -> dict[str, tuple[Path, str]]:
    """Shipped recipes: name -> (path, first comment line)."""
    out: dict[str, tuple[Path, str]] = {}
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        out[path.stem] = (path, first)
    return out


def resolve_config_path(spec: str | Path) -> Path:
    """A YAML path, or the name of a shipped recipe (``quickstart``)."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = recipes()
    if str(spec) in shipped:
        return shipped[str(spec)][0]
    hint = difflib.get_close_matches(str(spec), list(shipped), n=1)
    extra = f" (did you mean recipe {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"{spec}: no such config file, and not a recipe{extra}; recipes: {', '.join(shipped)}")


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
        node = vars(node).get(part)
        if not dataclasses.is_dataclass(node):
            return []
    return [f.name for f in dataclasses.fields(node)]


def _describe(exc: OmegaConfBaseException) -> tuple[str, str]:
    key = str(exc.full_key or "")
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
    """Checks that a schema cannot express: components, their parameters, enumerations."""
    method_config(cfg.method)  # the method's own section, typed
    loss_spec(cfg.loss)  # every loss key must be one the chosen loss takes
    encoder_spec(cfg.model)
    if cfg.data.sampler is not None:
        SAMPLERS.check(cfg.data.sampler, key="data.sampler")
    _choice(cfg.trainer.precision, TRAINER_PRECISIONS, "trainer.precision")
    _choice(cfg.eval.precision, ENCODE_PRECISIONS, "eval.precision")
    _choice(cfg.eval.projection, PROJECTIONS, "eval.projection")
    for name in cfg.eval.tasks:
        if name not in EVALUATIONS:
            hint = difflib.get_close_matches(name, [*EVALUATIONS.names(), *EVAL_SETTINGS], n=1)
            raise SectionKeyError(
                f"eval.{name}", f"eval.{name}: unknown evaluation {name!r}; evaluations: {', '.join(EVALUATIONS.names())}; "
                f"settings: {', '.join(EVAL_SETTINGS)}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
    _choice(cfg.optim.scheduler, SCHEDULERS, "optim.scheduler")
    _choice(cfg.optim.name, OPTIMIZERS, "optim.name")
    bounded: list[tuple[str, int | None, int]] = [
        ("data.batch_size", cfg.data.batch_size, 1),
        ("data.max_rows", cfg.data.max_rows, 1),
        ("trainer.max_epochs", cfg.trainer.max_epochs, -1),
        ("trainer.max_steps", cfg.trainer.max_steps, -1),
        ("trainer.num_nodes", cfg.trainer.num_nodes, 1),
        ("trainer.log_every_n_steps", cfg.trainer.log_every_n_steps, 1),
        ("trainer.checkpoint_every_n_steps", cfg.trainer.checkpoint_every_n_steps, 1),
        ("trainer.length_group_rows", cfg.trainer.length_group_rows, 1),
        ("trainer.pad_to_multiple_of", cfg.trainer.pad_to_multiple_of, 1),
        ("trainer.accumulate_grad_batches", cfg.trainer.accumulate_grad_batches, 1),
        ("data.num_workers", cfg.data.num_workers, 0),
        ("gradcache.chunk_size", cfg.gradcache.chunk_size, 1),
        ("gradcache.token_budget", cfg.gradcache.token_budget, 1),
        ("eval.every_n_epochs", cfg.eval.every_n_epochs, 1),
        ("eval.batch_size", cfg.eval.batch_size, 1),
        ("eval.projection_points", cfg.eval.projection_points, 10),
    ]
    for key, value, low in bounded:
        if value is not None and value < low:
            raise ConfigError(f"{key}: must be >= {low}, got {value}")
    t = cfg.trainer
    if t.max_epochs == -1 and t.max_steps == -1:
        raise ConfigError("trainer.max_epochs, trainer.max_steps: set at least one of them (both are unbounded)")
    temperature = cfg.loss.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and temperature > 0):
        raise SectionKeyError("loss.temperature", f"loss.temperature: must be > 0, got {temperature}")
    if not cfg.optim.lr > 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.optim.lr}")
    if not 0 <= cfg.optim.warmup_ratio < 1:
        raise ConfigError(f"optim.warmup_ratio: must be in [0, 1), got {cfg.optim.warmup_ratio}")


def import_components(modules: Sequence[str]) -> None:
    """Import each of ``imports`` (a module name, or a ``.py`` file): what it registers
    can then be named in the config. A module that does not import is a one-line error."""
    import importlib
    import importlib.util
    import sys

    for entry in modules:
        try:
            if entry.endswith(".py"):
                path = Path(entry)
                if not path.is_file():
                    raise ConfigError(f"imports: {entry}: no such file")
                name = f"contrastlib_user_{path.stem}"
                if name not in sys.modules:
                    spec = importlib.util.spec_from_file_location(name, path)
                    assert spec is not None and spec.loader is not None
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[name] = module
                    spec.loader.exec_module(module)
            else:
                importlib.import_module(entry)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"imports: {entry}: {type(exc).__name__}: {exc}") from None


def _open_sections(cfg: DictConfig) -> DictConfig:
    """Struct mode everywhere but inside the open sections (checked by :func:`validate`)."""
    OmegaConf.set_struct(cfg, True)
    for section in SECTION_SELECTORS:
        OmegaConf.set_struct(cfg[section], False)
    OmegaConf.set_struct(cfg.eval, False)  # evaluations by name: checked by validate()
    OmegaConf.set_struct(cfg.data.sampler_options, False)  # checked against the sampler in plan_fit
    return cfg


def load_config(path: str | Path | Mapping[str, Any] | None, overrides: Sequence[str] = (), *,
                values: Mapping[str, Any] | None = None) -> RunConfig:
    """Schema <- YAML file, shipped recipe name or mapping <- ``values`` (a nested mapping,
    dotted keys allowed) <- dotlist ``overrides``, validated; returns a typed RunConfig
    (``${bundled:...}`` paths resolved)."""
    cfg = _open_sections(OmegaConf.structured(RunConfig))
    if isinstance(path, Mapping):
        cfg = _open_sections(_merge(cfg, OmegaConf.create(dict(path)), "config", None))
        path = None
    if path is not None:
        path = resolve_config_path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            marked = isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None
            where = f"{path}:{exc.problem_mark.line + 1}" if marked else str(path)
            problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else exc
            raise ConfigError(f"{where}: invalid YAML ({problem})") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        for section in SECTION_SELECTORS:  # an open section replaced whole would lose its selector
            if section in raw and raw[section] is not None and not isinstance(raw[section], dict):
                raise ConfigError(f"{path}:{_yaml_line(path, section)}: {section} must be a mapping")
        cfg = _open_sections(_merge(cfg, OmegaConf.create(raw), str(path), path))
    if values:
        nested: dict[str, Any] = {}
        for key, value in values.items():  # "trainer.max_steps": 5 -> {"trainer": {"max_steps": 5}}
            *parents, last = key.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        cfg = _open_sections(_merge(cfg, OmegaConf.create(nested), "argument", None))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key = item.split("=", 1)[0]
        try:
            dot = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {item!r}: {str(exc).splitlines()[0]}") from None
        cfg = _open_sections(_merge(cfg, dot, f"override {key}", None))
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"missing value for {missing[0]!r} (set it in the YAML or as {missing[0]}=...)")
        tasks = _eval_tasks(cfg)
        obj = cast(RunConfig, OmegaConf.to_object(cfg))
        obj.eval.tasks = tasks
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc)[1]) from None
    import_components(obj.imports)
    try:
        validate(obj)
    except SectionKeyError as exc:
        overridden = any(o.split("=", 1)[0].startswith(exc.dotted) for o in overrides)
        line = _yaml_line(path, exc.dotted) if path is not None and not overridden else None
        prefix = "override " if overridden else f"{path}:{line}: " if line else ""
        raise ConfigError(prefix + str(exc)) from None
    return obj


def _eval_tasks(cfg: DictConfig) -> dict[str, list[Any]]:
    """The ``eval`` section's evaluations (every key but the settings), taken out of it:
    ``{name: [entries]}`` (a single entry given without a list is a list of one)."""
    tasks: dict[str, list[Any]] = cast(dict[str, list[Any]], OmegaConf.to_container(cfg.eval.tasks, resolve=True) or {})
    for key in [k for k in cfg.eval if k not in (*EVAL_SETTINGS, "tasks")]:
        value = OmegaConf.to_container(cfg.eval[key], resolve=True) if OmegaConf.is_config(cfg.eval[key]) else cfg.eval[key]
        tasks[str(key)] = [] if value is None else list(value) if isinstance(value, list) else [value]
        del cfg.eval[key]
    return tasks


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML, with the evaluations back under ``eval`` by name."""
    data: Any = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    data["eval"].update(data["eval"].pop("tasks") or {})
    return OmegaConf.to_yaml(OmegaConf.create(data))
