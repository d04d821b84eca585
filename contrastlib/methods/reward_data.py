"""The reward method's data: the head named in ``method.head`` checked against its
signature, the preference file read, split by prompt and converted to what the head
trains on (before any model loads), then fitted to the encoder's window, numbered and,
for a frozen encoder, embedded once through the on-disk cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrastlib.data.preference import PreferenceRow, PreferenceSet, read_preferences
from contrastlib.data.prompt_split import split_by_prompt
from contrastlib.data.readers import BadRows
from contrastlib.data.windows import POOLS, window_policy
from contrastlib.errors import ConfigError, DataError
from contrastlib.heads.base import RewardHead
from contrastlib.methods.data import TrainData
from contrastlib.methods.reward_batches import Encoded, RowIndices, TextTable, convert
from contrastlib.registry import HEADS
from contrastlib.signatures import SectionKeyError, signature_kwargs


def head_spec(values: dict[str, Any]) -> tuple[type[RewardHead], dict[str, Any]]:
    """``method.head`` -> (head class, its keyword arguments), checked by building it
    once on a toy size (no model needed)."""
    if not isinstance(values, dict):
        raise ConfigError(f"method.head: a mapping with a name; valid choices: {', '.join(HEADS.names())}")
    try:
        cls, kwargs, _ = signature_kwargs("method.head", values, selector="name", registry=HEADS,
                                          supplied=frozenset({"dim", "num_users"}))
    except SectionKeyError as exc:
        raise ConfigError(str(exc)) from None
    check_head(cls, kwargs)
    return cls, kwargs


def check_head(cls: type[RewardHead], kwargs: dict[str, Any], *, context: str = "") -> None:
    """Build ``cls`` once on a toy size: a value it refuses is a one-line ``method.head`` error."""
    try:
        cls(4, **kwargs, **({"num_users": 1} if cls.per_user else {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method.head: {exc}{context}") from None


@dataclass
class RewardTrainData(TrainData):
    preferences: PreferenceSet | None = None
    heldout: list[PreferenceRow] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    head_cls: Any = None
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Set by :meth:`RewardMethod.prepare_train_data` once the encoder is known.
    table: TextTable | None = None
    encoded: Encoded | None = None
    embeddings: Tensor | None = None
    eval_precision: str = "fp32"
    eval_batch_size: int = 128


def read_reward_data(path: str, config: Any, *, max_rows: int | None = None,
                     bad_rows: BadRows | None = None) -> RewardTrainData:
    """``data.on_bad_row: skip``: bad rows are skipped and counted."""
    head_cls, head_kwargs = head_spec(dict(config.head))
    if config.window_policy not in ("keep_final", "drop", "raise"):
        raise ConfigError(f"method.window_policy: keep_final, drop or raise, not {config.window_policy!r}")
    if config.pool not in POOLS:
        *names, last = POOLS
        raise ConfigError(f"method.pool: {', '.join(names)} or {last}, not {config.pool!r}")
    if config.frozen and config.aux_weight:
        raise ConfigError("method.aux_weight: the auxiliary contrastive loss trains the encoder; set method.frozen=false")
    if config.aux_weight < 0:
        raise ConfigError(f"method.aux_weight: must be >= 0, got {config.aux_weight}")
    try:
        policy = bad_rows.policy if bad_rows is not None else "error"
        prefs = read_preferences(path, fmt=config.format, on_bad_row=policy, max_rows=max_rows)
        train, heldout = split_by_prompt(prefs.rows, config.heldout_fraction, salt=config.split_salt)
    except ValueError as exc:
        if isinstance(exc, (ConfigError, DataError)):
            raise
        raise ConfigError(f"method: {exc}") from None
    if not train:
        raise ConfigError(f"method.heldout_fraction: every prompt of {path} was held out; lower the fraction")
    users = prefs.users
    if head_cls.per_user and not users:
        raise ConfigError(f"method.head: {config.head['name']!r} learns per-user preferences, and {path} has no 'user' field")
    objectives = prefs.objectives
    vector = head_cls.vector
    if prefs.per_objective and not vector:
        raise ConfigError(
            f"method.head: {path} scores its lists per objective, and {config.head['name']!r} learns one reward "
            "(the objectives' pairs can contradict each other); use multi_objective, or one score per response"
        )
    if objectives and vector:
        if "objectives" not in head_kwargs:  # a vector reward: one component per objective the data names
            head_kwargs = {**head_kwargs, "objectives": objectives}
        missing = sorted(set(objectives) - set(head_kwargs["objectives"]))
        if missing:
            raise ConfigError(
                f"method.head.objectives: {path} names objectives {missing} that are not among "
                f"{list(head_kwargs['objectives'])}"
            )
        check_head(head_cls, head_kwargs, context=f" (the objectives {path} names)")
    rows = convert(train, prefs.kind, head_cls.trains_on, source=path)
    heldout_rows = convert(heldout, prefs.kind, "pairs" if prefs.kind == "lists" else prefs.kind, source=path)
    description = f"{prefs.kind} ({len(train)} for training, {len(heldout)} held out by prompt hash)"
    if prefs.skipped:
        description += f"; {sum(prefs.skipped.values())} bad rows skipped: {dict(prefs.skipped)}"
    return RewardTrainData(
        source=path, rows=rows, dataset=RowIndices(len(rows)), description=description, preferences=prefs,
        heldout=heldout_rows, users=users, head_cls=head_cls, head_kwargs=head_kwargs,
        keys=[(r.prompt, *r.responses) for r in rows],  # samplers compare the texts (m_per_class: the prompt)
    )


def prepare_reward_data(data: TrainData, encoder: Any, config: Any, *, cache_dir: Path, precision: str,
                        batch_size: int, log: Callable[[str], None] = print) -> None:
    """Fit texts to the window, number them, and (frozen) embed them through the cache."""
    assert isinstance(data, RewardTrainData)
    if config.pool != "text" and encoder.spec.pooling == "cls":
        raise ConfigError(
            f"method.pool: {config.pool!r} pools the reply's tokens, and this encoder pools [CLS] alone "
            "(model.pooling=cls); use method.pool=text, or model.pooling=mean"
        )
    policy = window_policy(encoder, config.window_policy, config.pool)
    table = TextTable(policy)
    users = {u: i for i, u in enumerate(data.users)}
    objectives = list(data.head_kwargs.get("objectives", ()))
    kind = data.head_cls.trains_on
    data.encoded = table.encode(data.rows, kind, users=users, objectives=objectives,
                                with_prompts=config.aux_weight > 0)
    if not data.encoded.kept:
        raise ConfigError(f"method.window_policy: every training row of {data.source} was dropped as too long")
    data.table = table
    data.eval_precision, data.eval_batch_size = precision, batch_size
    if len(data.encoded.kept) != len(data.rows):
        kept = [data.rows[i] for i in data.encoded.kept]
        data.rows = kept
        data.keys = [(r.prompt, *r.responses) for r in kept]
        data.dataset = RowIndices(len(kept))
    log(policy.report.summary())
    if config.frozen:
        from contrastlib.index.cache import EmbeddingCache

        cache = EmbeddingCache(cache_dir)
        emb = cache.embed(encoder, table.texts, batch_size=batch_size, precision=precision, desc="embed texts",
                          encode_kwargs=dict(POOLS[config.pool]) or None)
        stats = cache.last_stats
        log(f"embeddings: {len(table.texts)} texts, {stats.get('reused', 0)}/{stats.get('shards', 0)} shards from the cache")
        data.embeddings = torch.from_numpy(emb)
