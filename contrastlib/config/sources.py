"""``data.train`` as one source or several.

One source is a path. Several are a mapping from a name to a source::

    data:
      train:
        nli: {path: nli.parquet, prompts: {anchor: "query: "}}
        sts: {path: stsb.tsv, columns: [sentence1, sentence2, score], loss: {name: cosent}, weight: 0.5}
      composition: proportional      # or round_robin (sentence-transformers' names)

A source given as a string is its path. Its keys:

* ``path``: the file or folder (any format the method reads);
* ``columns``, ``prompts``: as ``data.columns`` / ``data.prompts`` (which are the default
  of every source);
* ``loss``: the loss of this source's batches: a whole loss section (with ``name``), or
  only parameters, which override the run's ``loss`` section; ``loss.matryoshka`` is the
  run's unless given;
* ``weight``: this source's loss is multiplied by it (default 1).

Every global batch comes from one source (in-batch negatives share a distribution).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from contrastlib.errors import ConfigError
from contrastlib.samplers.sources import COMPOSITIONS

SOURCE_KEYS = ("path", "columns", "prompts", "loss", "weight")


@dataclass(frozen=True)
class SourceSpec:
    """One training source, its keys checked (see the module docstring)."""

    name: str
    path: str
    columns: list[str] | None = None
    prompts: Any = None
    #: The loss section of this source's batches (the run's, merged with its own keys).
    loss: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    #: Whether ``loss`` differs from the run's ``loss`` section.
    own_loss: bool = False


def plain(value: Any) -> Any:
    """An omegaconf node as plain Python (lists, dicts), anything else as it is."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def several_sources(train: Any) -> bool:
    """Whether ``data.train`` names several sources (a mapping)."""
    return isinstance(plain(train), Mapping)


def source_specs(data: Any, loss: Mapping[str, Any]) -> list[SourceSpec]:
    """The sources of ``data`` (the ``data`` section), each with its loss section; one
    source (a path) is named ``train``. One-line errors name the key."""
    train = plain(data.train)
    if data.composition not in COMPOSITIONS:
        raise ConfigError(f"data.composition: one of {', '.join(COMPOSITIONS)}, got {data.composition!r}")
    run_loss = dict(plain(loss))
    if isinstance(train, str):
        return [SourceSpec("train", train, plain(data.columns), plain(data.prompts), run_loss)]
    if not isinstance(train, Mapping) or not train:
        raise ConfigError(f"data.train: a path, or a mapping of source name -> source, got {train!r}")
    return [_spec(str(name), value, data, run_loss) for name, value in train.items()]


def _spec(name: str, value: Any, data: Any, run_loss: dict[str, Any]) -> SourceSpec:
    key = f"data.train.{name}"
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: a path, or a mapping with {', '.join(SOURCE_KEYS)}; got {value!r}")
    unknown = sorted(set(value) - set(SOURCE_KEYS))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: not a source key; a source has {', '.join(SOURCE_KEYS)}")
    path = value.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}.path: missing (the source's file or folder)")
    weight = value.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ConfigError(f"{key}.weight: a number > 0 (its loss is multiplied by it), got {weight!r}")
    own = value.get("loss")
    if own is not None and not isinstance(own, Mapping):
        raise ConfigError(f"{key}.loss: a loss section (name and parameters, or parameters only), got {own!r}")
    loss = _source_loss(run_loss, dict(own or {}))
    columns = value.get("columns", plain(data.columns))
    if columns is not None and (isinstance(columns, str) or not isinstance(columns, list)
                                or not all(isinstance(c, str) and c for c in columns)):
        raise ConfigError(f"{key}.columns: a list of column names, e.g. [query, answer]; got {columns!r}")
    prompts = value.get("prompts", plain(data.prompts))
    return SourceSpec(name, path, columns, prompts, loss, float(weight), own_loss=loss != run_loss)


def _source_loss(run_loss: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The source's loss section: the run's, with ``own``'s keys over it; a different
    ``name`` starts from that loss's defaults (keeping the run's ``matryoshka``)."""
    if "name" in own and own["name"] != run_loss.get("name"):
        inherited = {"matryoshka": run_loss["matryoshka"]} if run_loss.get("matryoshka") is not None else {}
        return {**inherited, **own}
    return {**run_loss, **own}
