"""Reward models on embeddings: a preference head (``contrastlib list`` shows them) on a
frozen or fine-tuned text encoder.

* ``method.frozen: true`` (default): every text is embedded once, through the on-disk
  embedding cache (a second run with the same model and data embeds nothing), and only
  the head trains. Fast: an epoch over 7,000 HH-RLHF pairs takes seconds.
* ``method.frozen: false``: the shared TextEncoder is fine-tuned with the head; the
  gradient cache works as for every method (the head receives its gradients), and
  ``method.aux_weight`` adds the run's contrastive ``loss`` on (prompt, chosen,
  rejected) as an auxiliary term.

Data: any format of :mod:`contrastlib.data.preference`, converted to what the head trains
on (a pair is a list of two; a scored list is its ordered pairs; a pair is a thumbs-up and
a thumbs-down). Rows whose prompt hashes below ``method.heldout_fraction`` are held out:
never trained on, evaluated before and after training (``heldout`` in metrics.json), and
used for the reward's normalisation statistics. Every text is fitted to the encoder's
window by ``method.window_policy`` (``keep_final``: the final reply whole, context cut
from the start), and the run prints what that did.

Config section ``method``: ``name: reward``, ``head: {name: bradley_terry, ...}`` and the
keys of :class:`RewardConfig`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from contrastlib.data.preference import (
    PreferenceRow,
    PreferenceSet,
    WindowPolicy,
    expand_pairs,
    read_preferences,
    split_by_prompt,
)
from contrastlib.data.readers import BadRows
from contrastlib.encoders.text import tokenize_texts
from contrastlib.errors import ConfigError, ModelLoadError
from contrastlib.heads.base import Preferences, RewardHead
from contrastlib.methods.base import ContrastiveModule, TrainData
from contrastlib.registry import HEADS, METHODS
from contrastlib.utils.io import atomic_path, write_json
from contrastlib.utils.marks import strip_pool_mark
from contrastlib.utils.modes import eval_mode

HEAD_FILE, HEAD_CONFIG = "reward_head.safetensors", "reward_head.json"


#: Rows whose responses estimate the reward normalisation (mean, std) at export.
NORMALISATION_ROWS = 2048

@dataclass
class RewardConfig:
    #: The preference head: ``name`` (a registered head) and its own parameters.
    head: dict[str, Any] = field(default_factory=lambda: {"name": "bradley_terry"})
    #: Embed once with the encoder frozen (only the head trains), or fine-tune it.
    frozen: bool = True
    #: The training file's format (auto: from its first row's keys).
    format: str = "auto"
    #: ``error``: a bad row stops the run naming its file and line; ``skip``: bad rows
    #: are left out and counted (the run prints the counts by reason).
    on_bad_row: str = "error"
    #: Texts longer than the encoder's window: keep_final, drop or raise.
    window_policy: str = "keep_final"
    #: Rows whose prompt hashes below this fraction are held out (0: none).
    heldout_fraction: float = 0.1
    #: Salt of the prompt hash (another salt, another split).
    split_salt: str = ""
    #: Weight of the run's contrastive ``loss`` on (prompt, chosen, rejected) embeddings
    #: (fine-tuning only; 0: off).
    aux_weight: float = 0.0
    #: Learning rate of the head when the encoder is fine-tuned (null: ``optim.lr``): a
    #: fresh head learns at rates that would wreck a pretrained encoder.
    head_lr: float | None = None
    #: What the embedding pools: ``text`` (every token of context + reply); ``reply``
    #: (the encoder reads the whole text, and only the final reply's tokens are pooled:
    #: the context, shared by the responses compared, no longer dilutes their
    #: difference); ``reply_context`` (the reply's pool and the context's pool side by
    #: side, 2x the encoder's dimension: an MLP head can then weigh the reply by the kind
    #: of request, e.g. a refusal after a harmful one).
    pool: str = "text"


#: ``method.pool`` -> what ``TextEncoder.encode`` / ``tokenize`` are given: with marks, the
#: window policy marks the reply in every fitted text and the encoder pools from it;
#: with ``pool_context`` the embedding is the reply's pool and the context's, 2x wide.
POOLS: dict[str, dict[str, bool]] = {
    "text": {},
    "reply": {"pool_marks": True},
    "reply_context": {"pool_marks": True, "pool_context": True},
}


def window_policy(encoder: Any, policy: str, pool: str) -> WindowPolicy:
    """How texts are fitted to ``encoder``'s window, marking the reply where ``pool`` pools from it."""
    return WindowPolicy(encoder.tokenizer, encoder.max_seq_length, policy, mark_reply=POOLS[pool].get("pool_marks", False))


# ---------------------------------------------------------------------------- heads
def head_spec(values: dict[str, Any]) -> tuple[type[RewardHead], dict[str, Any]]:
    """``method.head`` -> (head class, its keyword arguments), checked by building it
    once on a toy size (no model needed)."""
    if not isinstance(values, dict) or not isinstance(values.get("name"), str):
        raise ConfigError(f"method.head.name: missing; valid choices: {', '.join(HEADS.names())}")
    HEADS.check(values["name"], key="method.head.name")
    cls = HEADS.get(values["name"])
    kwargs = {k: v for k, v in values.items() if k != "name" and v is not None}
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "dim", "num_users")]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"method.head.{key}: not a parameter of head {values['name']!r}; it takes: {', '.join(accepted)}"
            )
    check_head(cls, kwargs)
    return cls, kwargs


def check_head(cls: type[RewardHead], kwargs: dict[str, Any], *, context: str = "") -> None:
    """Build ``cls`` once on a toy size: a value it refuses is a one-line ``method.head`` error."""
    try:
        cls(4, **kwargs, **({"num_users": 1} if cls.per_user else {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method.head: {exc}{context}") from None


def convert(rows: Sequence[PreferenceRow], kind: str, to: str, *, source: str) -> list[PreferenceRow]:
    """Rows of ``kind`` as rows of ``to`` (see the module docstring)."""
    if kind == to:
        return list(rows)
    out: list[PreferenceRow] = []
    if kind == "lists" and to == "pairs":
        return expand_pairs(rows)
    if kind == "pairs" and to == "lists":
        return [
            PreferenceRow(r.prompt, r.responses, (1.0, 0.0), user=r.user, subset=r.subset, where=r.where) for r in rows
        ]
    if kind == "pairs" and to == "unpaired":
        for r in rows:
            out.append(PreferenceRow(r.prompt, (r.responses[0],), (1.0,), subset=r.subset, where=r.where))
            out.append(PreferenceRow(r.prompt, (r.responses[1],), (0.0,), subset=r.subset, where=r.where))
        return out
    raise ConfigError(f"method.head: the head trains on {to}, and {source} holds {kind}, which cannot become {to}")


# ---------------------------------------------------------------------------- data
@dataclass
class Encoded:
    """Rows with their texts replaced by ids into one table of unique texts."""

    kind: str
    #: Per row: text ids (pairs: chosen, rejected; lists: every response; unpaired: one).
    ids: list[tuple[int, ...]]
    prompt_ids: list[int]
    scores: list[tuple[float, ...]]
    margin: list[float | None]
    strength: list[float | None]
    user: list[int]
    objective: list[int]
    #: The rows kept (``drop`` leaves some out), as indices into the input rows.
    kept: list[int]


class TextTable:
    """Unique texts, each fitted to the window once; rows refer to them by id."""

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}
        self._fitted: dict[tuple[str, str], int | None] = {}

    def add(self, text: str) -> int:
        i = self._ids.get(text)
        if i is None:
            i = self._ids[text] = len(self.texts)
            self.texts.append(text)
        return i

    def response(self, prompt: str, response: str, where: str) -> int | None:
        key = (prompt, response)
        if key not in self._fitted:
            text = self.policy.fit(prompt, response, where=where)
            self._fitted[key] = None if text is None else self.add(text)
        return self._fitted[key]

    def encode(
        self, rows: Sequence[PreferenceRow], kind: str, *, users: dict[str, int], objectives: Sequence[str] = (),
        with_prompts: bool = False,
    ) -> Encoded:
        out = Encoded(kind, [], [], [], [], [], [], [], [])
        for n, r in enumerate(rows):
            ids = [self.response(r.prompt, resp, r.where) for resp in r.responses]
            if any(i is None for i in ids):
                self.policy.report.dropped_rows += 1
                continue
            out.ids.append(tuple(i for i in ids if i is not None))
            if with_prompts:  # the auxiliary loss's anchors
                anchor = r.prompt if r.prompt.strip() else r.responses[0]
                out.prompt_ids.append(self.add(strip_pool_mark(anchor)))  # a plain text: pooled whole
            out.scores.append(r.scores)
            out.margin.append(r.margin)
            out.strength.append(r.strength)
            out.user.append(users.get(r.user, -1) if r.user is not None else -1)
            out.objective.append(list(objectives).index(r.objective) if r.objective is not None and r.objective in objectives else -1)
            out.kept.append(n)
        return out


@dataclass
class RewardBatch:
    """Unique texts of the batch (``view``: their global ids, or tokenised) and the rows'
    structure as local indices into them."""

    view: Any
    structure: Preferences  # tensors of local text indices in chosen/rejected/responses
    prompts: Tensor | None = None

    def to(self, device: torch.device | str) -> RewardBatch:
        view = self.view.to(device) if isinstance(self.view, Tensor) else {k: v.to(device) for k, v in self.view.items()}
        return RewardBatch(view, self.structure.to(device), None if self.prompts is None else self.prompts.to(device))


class RowIndices(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class RewardCollator:
    """Row indices -> a :class:`RewardBatch` (tokenises in DataLoader workers when the
    encoder is fine-tuned)."""

    def __init__(self, encoded: Encoded, texts: Sequence[str], tokenize: Callable[..., Any] | None, with_prompts: bool) -> None:
        self.encoded, self.texts, self.tokenize, self.with_prompts = encoded, texts, tokenize, with_prompts

    def __call__(self, rows: Sequence[int]) -> RewardBatch:
        e = self.encoded
        needed = [i for r in rows for i in e.ids[r]] + ([e.prompt_ids[r] for r in rows] if self.with_prompts else [])
        unique = list(dict.fromkeys(needed))
        local = {g: i for i, g in enumerate(unique)}
        ids = [[local[i] for i in e.ids[r]] for r in rows]
        user = torch.tensor([e.user[r] for r in rows])
        objective = torch.tensor([e.objective[r] for r in rows])
        margin = _optional([e.margin[r] for r in rows])
        strength = _optional([e.strength[r] for r in rows])
        if e.kind == "pairs":
            t = torch.tensor(ids)
            structure = Preferences("pairs", chosen=t[:, 0], rejected=t[:, 1], margin=margin, strength=strength,
                                    user=user, objective=objective)
        elif e.kind == "lists":
            k = max(len(x) for x in ids)
            resp = torch.tensor([x + [x[0]] * (k - len(x)) for x in ids])
            mask = torch.tensor([[j < len(x) for j in range(k)] for x in ids])
            scores = torch.tensor([list(e.scores[r]) + [0.0] * (k - len(e.scores[r])) for r in rows])
            structure = Preferences("lists", responses=resp, mask=mask, scores=scores, user=user)
        else:
            structure = Preferences("unpaired", responses=torch.tensor([x[0] for x in ids]),
                                    label=torch.tensor([e.scores[r][0] for r in rows]), user=user)
        prompts = torch.tensor([local[e.prompt_ids[r]] for r in rows]) if self.with_prompts else None
        view = torch.tensor(unique) if self.tokenize is None else self.tokenize([self.texts[i] for i in unique])
        return RewardBatch(view, structure, prompts)


def _optional(values: list[float | None]) -> Tensor | None:
    if all(v is None for v in values):
        return None
    return torch.tensor([float("nan") if v is None else v for v in values]).nan_to_num(0.0)


def gather_structure(structure: Preferences, emb: Tensor) -> Preferences:
    """Local text indices -> embeddings."""
    s = structure
    if s.kind == "pairs":
        assert s.chosen is not None and s.rejected is not None
        return Preferences("pairs", chosen=emb[s.chosen], rejected=emb[s.rejected], margin=s.margin,
                           strength=s.strength, user=s.user, objective=s.objective)
    assert s.responses is not None
    return Preferences(s.kind, responses=emb[s.responses], mask=s.mask, scores=s.scores, label=s.label, user=s.user)


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


# ---------------------------------------------------------------------------- the model
class RewardModel(nn.Module):
    """An encoder and a head: texts in, rewards out. What ``export`` writes, ``score``
    and ``eval reward`` load, and evaluators receive.

    Args:
        encoder: a TextEncoder (``encode``, ``tokenizer``, ``max_seq_length``).
        head: a :class:`~contrastlib.heads.RewardHead`.
        users: user names in the order of the head's per-user parameters.
        window_policy: how texts are fitted to the encoder's window.
        mean, std: reward normalisation statistics (from held-out data).
        pool: ``text``, ``reply`` or ``reply_context`` (``method.pool``): with the last
            two, fitted texts carry the pool mark at the reply's start, and the encoder
            pools from it (and, for ``reply_context``, before it too).
        lookup: precomputed embeddings by text (the frozen method's table).
        memo: a dict that keeps every embedding computed, for an encoder that does not
            change (the frozen method's evaluations before and after training).
    """

    def __init__(
        self, encoder: Any, head: RewardHead, *, users: Sequence[str] = (), window_policy: str = "keep_final",
        mean: float = 0.0, std: float = 1.0, pool: str = "text", precision: str = "fp32", batch_size: int = 128,
        lookup: tuple[dict[str, int], Tensor] | None = None, memo: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.users = list(users)
        self.window_policy = window_policy
        self.mean, self.std = mean, std
        self.pool = pool
        self.precision, self.batch_size = precision, batch_size
        self.lookup, self.memo = lookup, memo

    @property
    def scalar(self) -> bool:
        return bool(self.head.scalar)

    def _policy(self) -> WindowPolicy:
        return window_policy(self.encoder, self.window_policy, self.pool)

    def fit_texts(self, prompts: Sequence[str], responses: Sequence[str], where: Sequence[str] | None = None) -> list[str | None]:
        policy = self._policy()
        return [policy.fit(p, r, where=w) for p, r, w in zip(prompts, responses, where or [""] * len(prompts), strict=True)]

    @contextlib.contextmanager
    def memoized(self) -> Iterator[None]:
        """Within the block every text is embedded at most once (the weights do not
        change inside it); a model that already memoises keeps its memo."""
        if self.memo is not None:
            yield
            return
        self.memo = {}
        try:
            yield
        finally:
            self.memo = None

    @torch.no_grad()
    def embed(self, texts: Sequence[str], *, show_progress_bar: bool = False) -> Tensor:
        """``[N, D]`` embeddings; texts in ``lookup`` (or, for a frozen encoder, embedded
        by an earlier call: ``memo``) are not encoded again."""
        known: dict[str, Tensor] = {}
        if self.lookup is not None:
            index, table = self.lookup
            known = {t: table[index[t]] for t in texts if t in index}
        if self.memo is not None:
            known.update({t: self.memo[t] for t in texts if t in self.memo and t not in known})
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            out = torch.as_tensor(self.encoder.encode(missing, batch_size=self.batch_size, precision=self.precision,
                                                      show_progress_bar=show_progress_bar, convert_to_numpy=False,
                                                      **POOLS[self.pool]))
            new = dict(zip(missing, out.float(), strict=True))
            known.update(new)
            if self.memo is not None:
                self.memo.update(new)
        return torch.stack([known[t].float() for t in texts]) if texts else torch.zeros(0, 0)

    def _users(self, users: Sequence[str | None] | None, n: int) -> Tensor | None:
        if users is None:
            return None
        where = {u: i for i, u in enumerate(self.users)}
        return torch.tensor([where.get(u, -1) if u is not None else -1 for u in users][:n])

    @torch.no_grad()
    def rewards(self, texts: Sequence[str], users: Sequence[str | None] | None = None, *, normalize: bool = False) -> Tensor:
        """``[N]`` rewards of already-fitted texts."""
        emb = self.embed(texts)
        dev = next(self.head.parameters()).device
        u = self._users(users, len(texts))
        with eval_mode(self.head):
            r = self.head.reward(emb.to(dev), None if u is None else u.to(dev)).cpu()
        return (r - self.mean) / self.std if normalize else r

    @torch.no_grad()
    def prefer(self, a: Sequence[str], b: Sequence[str], users: Sequence[str | None] | None = None) -> Tensor:
        """``[N]`` log-odds that ``a[i]`` is preferred to ``b[i]`` (fitted texts)."""
        ea, eb = self.embed(a), self.embed(b)
        dev = next(self.head.parameters()).device
        u = self._users(users, len(a))
        with eval_mode(self.head):
            return self.head.prefer(ea.to(dev), eb.to(dev), None if u is None else u.to(dev)).cpu()

    def fingerprint(self) -> str:
        """A hash of the encoder's and the head's weights and the scoring settings."""
        import hashlib

        from contrastlib.index.cache import model_fingerprint

        h = hashlib.sha256(model_fingerprint(self.encoder).encode())
        for k, v in sorted(self.head.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().float().numpy().tobytes())
        h.update(json.dumps([self.window_policy, self.mean, self.std, self.precision, self.users, self.pool]).encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path, *, head_name: str, head_kwargs: dict[str, Any]) -> Path:
        """The encoder as a sentence-transformers dir, with the head beside it."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        self.encoder.save(out)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        with atomic_path(out / HEAD_FILE) as tmp:
            save_file(state, str(tmp))
        write_json(out / HEAD_CONFIG, {
            "head": head_name, "kwargs": head_kwargs, "dim": int(self.head.dim), "users": self.users,
            "window_policy": self.window_policy, "pool": self.pool, "mean": self.mean, "std": self.std,
            **self.head.extra_state(),
        })
        return out

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> RewardModel:
        """A saved reward model: a run dir (its ``model/``) or the model dir itself."""
        from safetensors.torch import load_file

        from contrastlib.encoders.text import TextEncoder

        root = Path(path)
        model_dir = root / "model" if (root / "model" / HEAD_CONFIG).is_file() else root
        config_path = model_dir / HEAD_CONFIG
        if not config_path.is_file():
            raise ModelLoadError(f"{path}: not a reward model (no {HEAD_CONFIG}; train one with a reward recipe)")
        spec = json.loads(config_path.read_text())
        head_cls = HEADS.get(spec["head"])
        state = load_file(str(model_dir / HEAD_FILE))
        kwargs = dict(spec["kwargs"])
        if head_cls.per_user:
            kwargs["num_users"] = int(state["user_logits"].shape[0])
        head = head_cls(int(spec["dim"]), **kwargs)
        head.load_state_dict(state)
        head.eval()
        encoder = TextEncoder(str(model_dir))
        return cls(encoder, head, users=spec.get("users", []), window_policy=spec.get("window_policy", "keep_final"),
                   mean=float(spec.get("mean", 0.0)), std=float(spec.get("std", 1.0)), pool=spec.get("pool", "text"),
                   **overrides)


# ---------------------------------------------------------------------------- the method
@METHODS.register("reward", summary="reward model: a preference head on a frozen or fine-tuned text encoder")
class RewardMethod(ContrastiveModule):
    Config = RewardConfig
    evaluations = ("reward",)
    encoders = ("text",)

    def __init__(
        self, encoder: nn.Module, loss: nn.Module, *, data: RewardTrainData, head: dict[str, Any] | None = None,
        frozen: bool = True, aux_weight: float = 0.0, window_policy: str = "keep_final",
        head_lr: float | None = None, pool: str = "text", **kwargs: Any,
    ) -> None:
        for unused in ("format", "on_bad_row", "heldout_fraction", "split_salt"):
            kwargs.pop(unused, None)
        hparams = dict(kwargs.pop("hparams", None) or {})
        hparams.update({"head": head, "frozen": frozen, "aux_weight": aux_weight, "users": data.users, "pool": pool})
        super().__init__(encoder, loss, hparams=hparams, **kwargs)
        enc: Any = encoder
        self.head_name = (head or {}).get("name", "bradley_terry")
        self.head_kwargs = dict(data.head_kwargs)
        extra = {"num_users": len(data.users)} if data.head_cls.per_user else {}
        width = 2 if POOLS[pool].get("pool_context") else 1  # reply_context: two pools side by side
        self.head: RewardHead = data.head_cls(enc.dim * width, **self.head_kwargs, **extra)
        self.frozen, self.aux_weight, self.head_lr = frozen, aux_weight, head_lr
        self.window_policy, self.pool = window_policy, pool
        self.data = data
        self.eval_precision, self.eval_batch_size = data.eval_precision, data.eval_batch_size
        self._memo: dict[str, Tensor] = {}  # frozen: evaluation texts embedded once per run
        if frozen:
            assert data.embeddings is not None
            encoder.requires_grad_(False)
            self.register_buffer("table", data.embeddings, persistent=False)

    table: Tensor

    # ------------------------------------------------------------------ checkpoints
    #: Checkpoint key of a frozen run: the fingerprint of the encoder it was trained on.
    FROZEN_KEY = "contrastlib_frozen_encoder"

    def _frozen_fingerprint(self) -> str:
        if not hasattr(self, "_frozen_fp"):
            from contrastlib.index.cache import model_fingerprint

            self._frozen_fp = model_fingerprint(self.encoder)  # it never changes: hashed once
        return self._frozen_fp

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A frozen encoder is the base model, unchanged: the checkpoint keeps its
        fingerprint instead of its weights (all-MiniLM-L6-v2: 90 MB less per save)."""
        if self.frozen:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith("encoder.")]:
                del state[key]
            checkpoint[self.FROZEN_KEY] = self._frozen_fingerprint()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the frozen encoder's weights back, after checking it is the same model."""
        saved = checkpoint.get(self.FROZEN_KEY)
        if saved is None:
            return
        if not self.frozen:
            raise ConfigError("method.frozen: the checkpoint is from a frozen-encoder run; it cannot resume fine-tuning")
        if saved != self._frozen_fingerprint():
            raise ConfigError(
                "model: the checkpoint was trained on another frozen encoder than this config loads "
                "(its weights or settings differ)"
            )
        state = checkpoint["state_dict"]
        for key, value in self.encoder.state_dict().items():
            state.setdefault(f"encoder.{key}", value)

    # ------------------------------------------------------------------ protocol
    @classmethod
    def read_train_data(cls, path: str, config: Any, *, max_rows: int | None = None,
                        bad_rows: BadRows | None = None) -> RewardTrainData:
        """``data.on_bad_row: skip`` or ``method.on_bad_row: skip``: bad rows are skipped and counted."""
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
            data_policy = bad_rows.policy if bad_rows is not None else "error"
            policy = "skip" if "skip" in (data_policy, config.on_bad_row) else config.on_bad_row
            prefs = read_preferences(path, fmt=config.format, on_bad_row=policy, max_rows=max_rows)
            train, heldout = split_by_prompt(prefs.rows, config.heldout_fraction, salt=config.split_salt)
        except ValueError as exc:
            if isinstance(exc, ConfigError) or hasattr(exc, "path"):
                raise
            raise ConfigError(f"method: {exc}") from None
        if not train:
            raise ConfigError(f"method.heldout_fraction: every prompt of {path} was held out; lower the fraction")
        users = prefs.users
        if head_cls.per_user and not users:
            raise ConfigError(f"method.head: {config.head['name']!r} learns per-user preferences, and {path} has no 'user' field")
        objectives = prefs.objectives
        vector = "objectives" in inspect.signature(head_cls.__init__).parameters
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
        )

    @classmethod
    def check_run(cls, config: Any, run: Any) -> None:
        if config.frozen and run.gradcache.enabled:
            raise ConfigError("gradcache: a frozen encoder has no gradients to cache; set method.frozen=false or drop gradcache")

    @classmethod
    def check_loss(cls, loss_cls: type, loss_name: str, data: TrainData) -> None:
        return None  # the loss is only the auxiliary term, on (prompt, chosen, rejected)

    @classmethod
    def extra_evaluators(cls, data: TrainData, *, batch_size: int, precision: str) -> list[Any]:
        from contrastlib.evaluation.reward import RewardEvaluator

        assert isinstance(data, RewardTrainData)
        if not data.heldout or data.preferences is None:
            return []
        kind = "lists" if data.preferences.kind == "lists" else data.preferences.kind
        held = PreferenceSet("pairs" if kind == "lists" else kind, data.heldout, f"{data.source} (held out)")
        return [RewardEvaluator("heldout", held)]

    @classmethod
    def prepare_train_data(cls, data: TrainData, encoder: Any, config: Any, *, cache_dir: Path, precision: str,
                     batch_size: int, log: Callable[[str], None] = print) -> None:
        """Fit texts to the window, number them, and (frozen) embed them through the cache."""
        assert isinstance(data, RewardTrainData)
        pooling = getattr(getattr(encoder, "spec", None), "pooling", "mean")
        if config.pool != "text" and pooling == "cls":
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

    def own_learning_rates(self) -> list[tuple[list[nn.Parameter], float]]:
        return [] if self.head_lr is None else [(list(self.head.parameters()), self.head_lr)]

    def collator(self) -> RewardCollator:
        enc: Any = self.encoder
        assert self.data.encoded is not None and self.data.table is not None
        tokenize = None if self.frozen else _Tokenize(enc.tokenizer, enc.max_seq_length, self.pool)
        return RewardCollator(self.data.encoded, self.data.table.texts, tokenize, with_prompts=self.aux_weight > 0)

    def on_train_epoch_start(self) -> None:
        # evaluation (before training, or the monitor's after an epoch) leaves the head in
        # eval mode, which would switch a head's dropout off for the epoch
        self.head.train()
        if self.frozen:
            self.encoder.eval()
        else:
            super().on_train_epoch_start()

    # ------------------------------------------------------------------ step
    def views(self, batch: RewardBatch) -> list[Any]:
        return [batch.view]

    def embed_views(self, views: list[Any]) -> list[Tensor]:
        if self.frozen:
            return [self.table[views[0]]]
        # the base encodes in length-sorted groups of trainer.length_group_rows rows, each
        # padded to its own longest: the same embeddings with less padding
        return super().embed_views(views)

    def contrast(self, embeddings: list[Tensor], batch: RewardBatch) -> Tensor:
        emb = embeddings[0]
        loss = self.head.loss(gather_structure(batch.structure, emb))
        if self.aux_weight and batch.prompts is not None and batch.structure.kind == "pairs":
            s = batch.structure
            assert s.chosen is not None and s.rejected is not None
            # reply_context: the reply's half only (a prompt's first half is its whole pool); a
            # response's context half is nearly the prompt's own, a shortcut for the loss
            part = emb[:, : emb.shape[1] // 2] if self.pool == "reply_context" else emb
            aux = self.loss_fn(part[batch.prompts], torch.cat([part[s.chosen], part[s.rejected]]))
            self.log("train/aux_loss", aux.detach(), batch_size=len(s.chosen))
            loss = loss + self.aux_weight * aux
        return loss

    # ------------------------------------------------------------------ outputs
    def evaluation_model(self) -> RewardModel:
        lookup = None
        if self.frozen and self.data.table is not None:
            lookup = ({t: i for i, t in enumerate(self.data.table.texts)}, self.table.cpu())
        return RewardModel(self.encoder, self.head, users=self.data.users, window_policy=self.window_policy,
                           pool=self.pool, precision=self.eval_precision, batch_size=self.eval_batch_size, lookup=lookup,
                           memo=self._memo if self.frozen else None)

    def normalisation(self, model: RewardModel) -> tuple[float, float]:
        """Mean and standard deviation of the reward over the held-out responses (the
        training responses when nothing is held out), from at most
        :data:`NORMALISATION_ROWS` rows (encoding every training response of a large set
        again at the end of a run would cost a fifth of an epoch)."""
        if not self.head.scalar:
            return 0.0, 1.0
        rows = list(self.data.heldout or self.data.rows)
        if len(rows) > NORMALISATION_ROWS:  # a fixed, seeded sample: the mean and std to ~2%
            rows = random.Random(0).sample(rows, NORMALISATION_ROWS)
        texts = [t for t in model.fit_texts([r.prompt for r in rows for _ in r.responses],
                                            [x for r in rows for x in r.responses]) if t is not None]
        rewards = torch.cat([model.rewards(texts[i : i + 4096]) for i in range(0, len(texts), 4096)])
        std = float(rewards.std()) if len(rewards) > 1 else 1.0
        return float(rewards.mean()), std if std > 0 and math.isfinite(std) else 1.0

    def export(self, out_dir: Path) -> Path:
        model = self.evaluation_model()
        model.mean, model.std = self.normalisation(model)
        return model.save(out_dir, head_name=self.head_name, head_kwargs=self.head_kwargs)


class _Tokenize:
    def __init__(self, tokenizer: Any, max_length: int, pool: str = "text") -> None:
        self.tokenizer, self.max_length, self.pool = tokenizer, max_length, pool

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        # a pool mark becomes pool_mask (and context_mask)
        return tokenize_texts(self.tokenizer, texts, self.max_length, **POOLS[self.pool])



__all__ = ["RewardConfig", "RewardMethod", "RewardModel", "head_spec"]
