"""How the reward method's rows become batches: preference rows converted to what the
head trains on, every text fitted to the window once and numbered (:class:`TextTable`),
and a batch of row indices turned into the batch's unique texts plus the rows'
structure as indices into them (:class:`RewardBatch`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastlib.data.preference import PreferenceRow, expand_pairs
from contrastlib.data.windows import POOLS, WindowPolicy
from contrastlib.encoders.tokenize import tokenize_texts
from contrastlib.errors import ConfigError
from contrastlib.heads.base import Preferences
from contrastlib.utils.marks import strip_pool_mark


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


class RewardTokenize:
    """Texts -> token ids; a pool mark becomes ``pool_mask`` (and ``context_mask``)."""

    def __init__(self, tokenizer: Any, max_length: int, pool: str = "text") -> None:
        self.tokenizer, self.max_length, self.pool = tokenizer, max_length, pool

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        # a pool mark becomes pool_mask (and context_mask)
        return tokenize_texts(self.tokenizer, texts, self.max_length, **POOLS[self.pool])
