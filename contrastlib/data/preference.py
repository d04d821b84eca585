"""Preference data: the rows and a reader for every format. (The split by prompt is in
:mod:`contrastlib.data.prompt_split`; fitting texts to a window in
:mod:`contrastlib.data.windows`.)

Formats (JSON lines, optionally gzipped; the format is read from the first row's keys):

* ``hh``: Anthropic HH-RLHF, ``{chosen, rejected}``: two whole dialogues that share the
  prompt and differ in the final assistant reply. Split into the prompt (everything up
  to and including the last ``"\\n\\nAssistant:"``) and the two replies.
* ``pairs``: ``{prompt, chosen, rejected[, margin][, strength][, subset][, objective]}``.
* ``user_pairs``: the same with ``user`` (per-user preferences).
* ``lists``: ``{prompt, responses: [...], scores: [...]}`` (a ranking or scalar rewards;
  a higher score is better). ``scores`` may instead hold one list per objective,
  ``{"helpfulness": [...], "verbosity": [...]}`` (ratings per attribute, as HelpSteer2
  gives them): each objective then orders the responses on its own, and only the
  ``multi_objective`` head trains on such rows (as pairs tagged with their objective).
* ``unpaired``: ``{prompt, response, label}`` with label 1/0 or true/false (thumbs up or down).

Every row may carry ``subset`` (or ``section``): accuracy is then also reported per subset
and section-weighted. A directory is read as all its ``*.jsonl``/``*.jsonl.gz`` files, each
file's subset defaulting to its folder's name (``hh-rlhf/helpful-base/test.jsonl.gz`` ->
``helpful-base``).

A bad row is a :class:`~contrastlib.errors.DataError` naming the file and line. With
``on_bad_row="skip"`` such rows are counted by reason and left out, never silently.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastlib.data.readers import BadRows, read_records
from contrastlib.errors import DataError

FORMATS = ("auto", "hh", "pairs", "user_pairs", "lists", "unpaired")

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"


@dataclass
class PreferenceRow:
    """One preference, whatever its format (``kind`` says which fields are set)."""

    prompt: str
    #: pairs: (chosen, rejected); lists: every response; unpaired: (response,).
    responses: tuple[str, ...]
    #: lists: each response's score; unpaired: (label,); pairs: empty.
    scores: tuple[float, ...] = ()
    margin: float | None = None
    strength: float | None = None
    user: str | None = None
    subset: str | None = None
    objective: str | None = None
    #: lists scored per objective: each objective's score of every response (``scores``
    #: is then empty).
    objective_scores: dict[str, tuple[float, ...]] | None = None
    #: Where the row came from, for messages: "file:line".
    where: str = ""

    def ordered_pairs(self, objective: str | None = None) -> list[tuple[int, int]]:
        """``(better, worse)`` response indices: the pair itself for a pair, and every
        two responses with different scores for a scored list (by ``objective``'s
        scores for a list scored per objective)."""
        scores = self.scores if objective is None else (self.objective_scores or {})[objective]
        if not scores:  # a pair: chosen, rejected
            if self.objective_scores is not None:
                raise ValueError(f"{self.where}: this list is scored per objective; name one")
            return [(0, 1)]
        order = sorted(range(len(self.responses)), key=lambda i: -scores[i])
        return [(a, b) for i, a in enumerate(order) for b in order[i + 1 :] if scores[a] > scores[b]]


@dataclass
class PreferenceSet:
    """Rows of one kind (``pairs``, ``lists`` or ``unpaired``) and what reading them did."""

    kind: str
    rows: list[PreferenceRow]
    source: str
    #: Rows left out by ``on_bad_row="skip"``, by reason.
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def users(self) -> list[str]:
        return sorted({r.user for r in self.rows if r.user is not None})

    @property
    def subsets(self) -> list[str]:
        return sorted({r.subset for r in self.rows if r.subset is not None})

    @property
    def objectives(self) -> list[str]:
        """The objectives the rows name (a pair's ``objective``, a list's per-objective scores)."""
        names = {r.objective for r in self.rows if r.objective is not None}
        names.update(o for r in self.rows for o in (r.objective_scores or {}))
        return sorted(names)

    @property
    def per_objective(self) -> bool:
        """Lists scored per objective."""
        return any(r.objective_scores is not None for r in self.rows)


def _files(path: Path) -> list[tuple[Path, str | None]]:
    if not path.exists():
        raise DataError(path, "no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz")))
        if not files:
            raise DataError(path, "no .jsonl or .jsonl.gz files in this directory")
        return [(f, f.parent.name if f.parent != path else None) for f in files]
    if not path.name.endswith((".jsonl", ".jsonl.gz")):
        raise DataError(path, "preference data must be JSON lines (.jsonl or .jsonl.gz)")
    return [(path, None)]


def read_objects(path: Path, bad_rows: BadRows | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, object)`` of a JSON-lines file (:func:`~contrastlib.data.readers.read_records`);
    a file without a row is an error."""
    n = 0
    for line, obj in read_records(path, bad_rows):
        n += 1
        yield line, obj
    if n == 0:
        raise DataError(path, "no rows")


def detect_format(keys: Sequence[str]) -> str:
    k = set(keys)
    if {"responses", "scores"} <= k:
        return "lists"
    if {"response", "label"} <= k:
        return "unpaired"
    if {"chosen", "rejected"} <= k:
        if "user" in k:
            return "user_pairs"
        return "pairs" if "prompt" in k else "hh"
    raise ValueError(
        "cannot tell the format from the keys "
        f"{sorted(k)}: expected {{chosen, rejected}} (HH-RLHF), {{prompt, chosen, rejected}}, "
        "{user, prompt, chosen, rejected}, {prompt, responses, scores} or {prompt, response, label}"
    )


KIND_OF = {"hh": "pairs", "pairs": "pairs", "user_pairs": "pairs", "lists": "lists", "unpaired": "unpaired"}


def split_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """HH-RLHF: ``(prompt, chosen reply, rejected reply)``. The prompt runs up to and
    including the last ``"\\n\\nAssistant:"`` the two dialogues share."""
    cut = chosen.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError("the chosen dialogue has no assistant turn ('\\n\\nAssistant:')")
    if rejected.rfind(ASSISTANT) < 0:
        raise ValueError("the rejected dialogue has no assistant turn ('\\n\\nAssistant:')")
    # the last assistant turn that starts at the same place in both dialogues
    while cut >= 0 and chosen[: cut + len(ASSISTANT)] != rejected[: cut + len(ASSISTANT)]:
        cut = chosen.rfind(ASSISTANT, 0, cut)
    if cut < 0:
        raise ValueError("chosen and rejected dialogues do not share a prompt up to an assistant turn")
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:].strip(), rejected[end:].strip()


def _text(obj: dict[str, Any], key: str) -> str:
    if key not in obj or obj[key] is None:
        raise ValueError(f"missing '{key}'")
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string, got {type(value).__name__}")
    return value


def _number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'{key}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"'{key}' must be finite, got {value}")
    return float(value)


def _label(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false", "up", "down"):
        return 1.0 if value.strip().lower() in ("1", "true", "up") else 0.0
    raise ValueError(f"'label' must be 1/0, true/false or up/down, got {value!r}")


def parse_row(fmt: str, obj: dict[str, Any], subset: str | None) -> PreferenceRow:
    """One JSON object -> a row; ``ValueError`` says what is wrong with it."""
    sub = obj.get("subset", obj.get("section", subset))
    sub = None if sub is None else str(sub)
    if fmt == "hh":
        prompt, chosen, rejected = split_dialogue(_text(obj, "chosen"), _text(obj, "rejected"))
        row = PreferenceRow(prompt, (chosen, rejected), subset=sub)
    elif fmt in ("pairs", "user_pairs"):
        row = PreferenceRow(
            _text(obj, "prompt"), (_text(obj, "chosen"), _text(obj, "rejected")),
            margin=_number(obj, "margin"), strength=_number(obj, "strength"), subset=sub,
            objective=None if obj.get("objective") is None else str(obj["objective"]),
        )
        if fmt == "user_pairs":
            if obj.get("user") is None:
                raise ValueError("missing 'user'")
            row.user = str(obj["user"])
        if row.strength is not None and not 0 <= row.strength <= 1:
            raise ValueError(f"'strength' must be in [0, 1], got {row.strength}")
    elif fmt == "lists":
        responses, scores = obj.get("responses"), obj.get("scores")
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise ValueError("'responses' must be a list of strings")
        if len(responses) < 2:
            raise ValueError("a list needs at least two responses")
        if isinstance(scores, dict):  # one list per objective
            if not scores:
                raise ValueError("'scores' names no objective")
            per: dict[str, tuple[float, ...]] = {}
            for name, values in scores.items():
                if not isinstance(values, list) or len(values) != len(responses):
                    raise ValueError(f"'scores.{name}' must be a list of {len(responses)} numbers, one per response")
                numbers = [_number({f"scores.{name}": v}, f"scores.{name}") for v in values]
                if any(v is None for v in numbers):
                    raise ValueError(f"'scores.{name}' holds a null")
                per[str(name)] = tuple(v for v in numbers if v is not None)
            if all(len(set(v)) == 1 for v in per.values()):
                raise ValueError("every response has the same score on every objective: nothing to learn from the row")
            row = PreferenceRow(_text(obj, "prompt"), tuple(responses), subset=sub, objective_scores=per)
        else:
            if not isinstance(scores, list) or len(scores) != len(responses):
                raise ValueError(
                    f"'scores' must be a list of {len(responses)} numbers, one per response "
                    "(or an object of such lists, one per objective)"
                )
            values = [_number({"score": s}, "score") for s in scores]
            row = PreferenceRow(_text(obj, "prompt"), tuple(responses), tuple(float(v or 0) for v in values), subset=sub)
            if len(set(row.scores)) == 1:
                raise ValueError("every response has the same score: nothing to learn from the row")
    elif fmt == "unpaired":
        row = PreferenceRow(_text(obj, "prompt"), (_text(obj, "response"),), (_label(obj.get("label")),), subset=sub)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if fmt != "unpaired" and len(set(row.responses)) < len(row.responses):
        raise ValueError(
            "chosen is identical to rejected" if KIND_OF[fmt] == "pairs" else "the list repeats a response"
        )
    if any(not r.strip() for r in row.responses):
        raise ValueError("a response is empty")
    return row


def read_preferences(
    path: str | Path, *, fmt: str = "auto", on_bad_row: str = "error", max_rows: int | None = None
) -> PreferenceSet:
    """Read a preference file or directory (see the module docstring).

    Args:
        fmt: one of :data:`FORMATS` (``auto``: from the first row's keys).
        on_bad_row: ``error`` (default): the first bad row is a ``DataError`` naming its
            file and line; ``skip``: bad rows are left out and counted in ``skipped``.
        max_rows: stop after this many good rows.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown preference format {fmt!r}; valid: {', '.join(FORMATS)}")
    bad = BadRows(on_bad_row)
    root = Path(path)
    rows: list[PreferenceRow] = []
    kind: str | None = None
    for file, subset in _files(root):
        file_fmt = fmt
        for line, obj in read_objects(file):
            if file_fmt == "auto":
                try:
                    file_fmt = detect_format(list(obj))
                except ValueError as exc:
                    raise DataError(file, str(exc), line) from None
                if kind is not None and KIND_OF[file_fmt] != kind:
                    raise DataError(file, f"holds {KIND_OF[file_fmt]}, but the files before it hold {kind}", line)
                kind = KIND_OF[file_fmt]
            try:
                row = parse_row(file_fmt, obj, subset)
            except ValueError as exc:
                bad(DataError(file, str(exc), line))
                continue
            row.where = f"{file}:{line}"
            rows.append(row)
            if max_rows is not None and len(rows) >= max_rows:
                break
        if max_rows is not None and len(rows) >= max_rows:
            break
    if not rows:
        raise DataError(root, f"no usable rows ({bad.summary() or 'none in the file'})")
    return PreferenceSet(kind or KIND_OF[fmt], rows, str(root), bad.reasons)


def expand_pairs(rows: Sequence[PreferenceRow]) -> list[PreferenceRow]:
    """Every row as ``(better, worse)`` pair rows: a pair as it is; a scored list as each
    two responses with different scores; a list scored per objective as each objective's
    ordered pairs, tagged with that objective."""
    out: list[PreferenceRow] = []
    for r in rows:
        if not r.scores and r.objective_scores is None:
            out.append(r)
            continue
        for objective in sorted(r.objective_scores) if r.objective_scores is not None else [None]:
            out.extend(
                PreferenceRow(r.prompt, (r.responses[a], r.responses[b]), user=r.user, subset=r.subset,
                              objective=objective if objective is not None else r.objective, where=r.where)
                for a, b in r.ordered_pairs(objective)
            )
    return out
