"""Fitting ``prompt + response`` into an encoder's window of tokens, and marking where the
reply starts (:mod:`contrastlib.utils.marks`), for the pools of ``method.pool``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contrastlib.errors import DataError
from contrastlib.utils.marks import POOL_MARK, strip_pool_mark

#: Inputs longer than the window: keep the final reply and as much context as fits.
WINDOW_POLICIES = ("keep_final", "drop", "raise")

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


def join(prompt: str, response: str) -> str:
    """The text a reward model reads for one response."""
    if not prompt.strip():
        return response
    return f"{prompt} {response}" if prompt.rstrip().endswith(":") else f"{prompt}\n{response}"


@dataclass
class WindowReport:
    """What the long-input policy did, in texts (one per prompt and response)."""

    policy: str
    window: int
    texts: int = 0
    #: Kept whole.
    fit: int = 0
    #: Context cut from the start; the final reply kept whole.
    context_cut: int = 0
    #: The reply alone is longer than the window: its start kept, no context.
    reply_cut: int = 0
    #: Rows left out (``drop``): a row is dropped when any of its texts is too long.
    dropped_rows: int = 0

    def summary(self) -> str:
        return (
            f"inputs over the {self.window}-token window (policy {self.policy}): {self.texts} texts, "
            f"{self.fit} fit, {self.context_cut} had context cut, {self.reply_cut} had the reply itself cut, "
            f"{self.dropped_rows} rows dropped"
        )


class WindowPolicy:
    """Fit ``prompt + response`` into ``window`` tokens.

    ``keep_final`` (the default) keeps the final reply and as much of the context before
    it as fits, cutting the context from the start: HH-RLHF dialogues differ only in the
    final reply, and truncating from the end cuts exactly that part off. A reply longer
    than the window on its own keeps its start. ``drop`` leaves such rows out; ``raise``
    makes them an error. :attr:`report` counts what happened.

    Args:
        tokenizer: a Hugging Face fast tokenizer (offsets are needed).
        window: the encoder's ``max_seq_length`` (special tokens included).
        mark_reply: put the pool mark (:mod:`contrastlib.utils.marks`) at the reply's
            first character, so the embedding pools the reply's tokens only (the whole
            text when the reply itself was cut).
    """

    def __init__(self, tokenizer: Any, window: int, policy: str = "keep_final", *, mark_reply: bool = False) -> None:
        if policy not in WINDOW_POLICIES:
            raise ValueError(f"window policy must be one of {', '.join(WINDOW_POLICIES)}, got {policy!r}")
        self.tokenizer = tokenizer
        self.budget = window - int(tokenizer.num_special_tokens_to_add(pair=False))
        if self.budget < 1:
            raise ValueError(f"a window of {window} tokens leaves no room for text")
        self.policy = policy
        self.mark_reply = mark_reply
        self.report = WindowReport(policy, window)

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def fit(self, prompt: str, response: str, *, where: str = "") -> str | None:
        """The text to embed, or None (``drop``)."""
        prompt, response = strip_pool_mark(prompt), strip_pool_mark(response)
        text = self._fit(prompt, response, where)
        if text is None or not self.mark_reply:
            return text
        start = len(text) - len(response) if text.endswith(response) else 0  # the reply cut: all of it
        return text[:start] + POOL_MARK + text[start:]

    def _fit(self, prompt: str, response: str, where: str) -> str | None:
        text = join(prompt, response)
        self.report.texts += 1
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets: list[tuple[int, int]] = enc["offset_mapping"]
        n = len(offsets)
        if n <= self.budget:
            self.report.fit += 1
            return text
        if self.policy == "raise":
            raise DataError(where or "input", f"{n} tokens, longer than the {self.budget} the window holds "
                            "(set the window policy to keep_final or drop)")
        if self.policy == "drop":
            return None
        start = len(text) - len(response)
        first_reply = next((i for i, (s, e) in enumerate(offsets) if e > start), n)
        if n - first_reply >= self.budget:  # the reply alone overflows: keep its beginning
            self.report.reply_cut += 1
            return text[start : offsets[first_reply + self.budget - 1][1]]
        i = n - self.budget
        out = text[offsets[i][0] :]
        while self._count(out) > self.budget and i < first_reply:  # a cut word can split into more tokens
            i += 1
            out = text[offsets[i][0] :]
        self.report.context_cut += 1
        return out
