"""A run's training data and loss from ``data.train``: one source, or several
(:mod:`contrastlib.config.sources`), each read by the method as it reads one file, then
put one after another (:class:`~contrastlib.data.sources.SourcesDataset`) with each
source's own data kept for its sampler, collator, loss and weight. Each source's loss is
checked against that source's data before any model loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from contrastlib.config.build import build_loss, loss_spec
from contrastlib.config.sources import SourceSpec
from contrastlib.data.collate import IndexedRows
from contrastlib.data.prompts import named_prompts
from contrastlib.data.readers import BadRows
from contrastlib.data.sources import Chained, SourcesDataset, starts_of
from contrastlib.errors import ConfigError, ContrastlibError
from contrastlib.losses.base import ContrastiveLoss, check_loss
from contrastlib.losses.sources import SourceLosses
from contrastlib.methods.data import SourcePart, TrainData


def read_sources(method: str, method_cls: Any, specs: Sequence[SourceSpec], config: Any, *, several: bool,
                 composition: str, max_rows: int | None, on_bad_row: str) -> TrainData:
    """The method's :class:`TrainData` of ``specs``: one source (``data.train`` a path) as
    the method reads it; ``several`` (a mapping, even of one source) each kept as a part."""
    def read(s: SourceSpec, method_config: Any) -> TrainData:
        data: TrainData = method_cls.read_train_data(s.path, method_config, max_rows=max_rows, columns=s.columns,
                                                     bad_rows=BadRows(on_bad_row, key="data.on_bad_row"), prompts=s.prompts)
        return data

    if not several:
        return read(specs[0], config)
    if not method_cls.several_sources:
        raise ConfigError(f"data.train: method {method!r} trains on one source; give a path")
    parts = []
    for s in specs:
        try:  # a source's loss can decide how it is read (SimCSE: graded scores -> scored pairs)
            data = read(s, method_cls.source_config(config, _loss_class(s)))
        except ContrastlibError as exc:  # data.columns / data.prompts of this source, named as it set them
            raise ConfigError(_source_key(str(exc), s.name)) from None
        if not len(data.rows):
            raise ConfigError(f"data.train.{s.name}: {s.path} has no rows")
        parts.append(SourcePart(s.name, data, s.weight))
    return combined(parts, composition)


def _source_key(message: str, name: str) -> str:
    """``data.columns: ...`` -> ``data.train.NAME.columns: ...`` (the key the source set)."""
    for key in ("columns", "prompts"):
        message = message.replace(f"data.{key}", f"data.train.{name}.{key}")
    return message


def check_batches(data: TrainData, *, batch_size: int, drop_last: bool, devices: Any) -> None:
    """Refuse a source of several that would form no batch (with ``drop_last``, fewer rows
    than a global batch; or fewer rows than devices): it would never train, and under
    ``round_robin`` no source would."""
    world = int(devices) if str(devices).isdigit() else 1
    for part in data.parts:
        n = len(part.data.rows)
        if n // (batch_size * world) == 0 and (drop_last or n < world):
            raise ConfigError(f"data.train.{part.name}: {n} rows make no global batch of {batch_size} x {world} "
                              f"device(s){' with data.drop_last' if drop_last else ''}; it would never train")


def _loss_key(spec: SourceSpec, message: str) -> str:
    """A loss error of ``spec`` under the key that set it (``data.train.NAME.loss...``)."""
    key = f"data.train.{spec.name}.loss" if spec.own_loss else "loss"
    return key + message[len("loss"):] if message.startswith("loss") else message


def _loss_class(spec: SourceSpec) -> type[ContrastiveLoss]:
    try:
        return loss_spec(spec.loss)[0]
    except ConfigError as exc:
        raise ConfigError(_loss_key(spec, str(exc))) from None


def plan_loss(method_cls: Any, config: Any, data: TrainData, specs: Sequence[SourceSpec]) -> ContrastiveLoss:
    """The run's loss, checked against what the method gives it. Several sources: each
    source's loss (its own section, or the run's) checked against that source's data, and
    :class:`SourceLosses` over them (sources with the same section share one module)."""
    parts = data.parts or (SourcePart(specs[0].name, data),)
    sections: list[dict[str, Any]] = []
    index: list[int] = []
    for spec, part in zip(specs, parts, strict=True):
        loss_cls = _loss_class(spec)
        source_config = method_cls.source_config(config, loss_cls) if data.parts else config  # as read_sources read it
        try:
            check_loss(loss_cls, spec.loss["name"], method_cls.loss_contract(source_config, part.data))
        except ConfigError as exc:
            raise ConfigError(_loss_key(spec, str(exc))) from None
        if spec.loss not in sections:
            sections.append(spec.loss)
        index.append(sections.index(spec.loss))
    losses = [build_loss(s, num_samples=len(data.rows)) for s in sections]
    if not data.parts:
        return losses[0]
    return SourceLosses(losses, index, [s.weight for s in specs], [s.name for s in specs])


def combined(parts: Sequence[SourcePart], composition: str) -> TrainData:
    """The sources' data one after another (each kept as a part)."""
    datas = [p.data for p in parts]
    scores = [d.scores for d in datas]
    labels = [d.labels for d in datas]
    anchors = [d.anchors for d in datas]
    return TrainData(
        source=", ".join(f"{p.name} ({p.data.source})" for p in parts),
        rows=Chained([d.rows for d in datas]),
        dataset=SourcesDataset([_numbered(d.dataset, start) for d, start in zip(datas, starts_of([len(d.rows) for d in datas]), strict=True)]),
        description="; ".join(f"{p.name}: {len(p.data.rows)} {p.data.description}" for p in parts),
        hard_negatives=any(d.hard_negatives for d in datas),
        views=max(d.views for d in datas),
        labels=Chained([x for x in labels if x is not None]) if all(x is not None for x in labels) else None,
        anchors=Chained([x for x in anchors if x is not None]) if all(x is not None for x in anchors) else None,
        # graded scores of the sources that have them (NaN for the others' rows)
        scores=np.concatenate([np.full(len(d.rows), np.nan) if d.scores is None else np.asarray(d.scores, dtype=np.float64)
                               for d in datas]) if any(x is not None for x in scores) else None,
        parts=tuple(parts),
        composition=composition,
    )


def _numbered(dataset: Any, start: int) -> Any:
    """A source's dataset whose items carry their row's number among all sources' rows
    (per-row scores and per-example loss parameters are indexed by it)."""
    if not isinstance(dataset, IndexedRows):
        raise TypeError(f"several sources need datasets of numbered rows (IndexedRows), not {type(dataset).__name__}")
    return IndexedRows(dataset.rows, offset=start)


def prompt_names(data: TrainData) -> dict[str, str]:
    """The run's prompts under sentence-transformers' names (``query``, ``document``...):
    one source's as :func:`named_prompts` gives them; of several, a name every source that
    sets it agrees on as it is, and where they differ, each source's as ``NAME_query`` and
    the first source's under the plain name too (what ``encode_query`` and the run's own
    evaluations use)."""
    if not data.parts:
        return named_prompts(data.prompts)
    per_source = {p.name: named_prompts(p.data.prompts) for p in data.parts}
    out: dict[str, str] = {}
    for name in dict.fromkeys(k for names in per_source.values() for k in names):
        values = {names[name] for names in per_source.values() if name in names}
        if len(values) == 1:
            out[name] = values.pop()
        else:
            setting = {source: names[name] for source, names in per_source.items() if name in names}
            out[name] = next(iter(setting.values()))
            out.update({f"{source}_{name}": prompt for source, prompt in setting.items()})
    return out
