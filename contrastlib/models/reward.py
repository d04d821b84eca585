"""The reward model: an encoder and a preference head, texts in, rewards out. What a
reward run exports, what ``score`` and ``eval reward`` load, and what evaluations
receive from a reward method. A saved model is a sentence-transformers directory with
the head beside it (``reward_head.safetensors`` and ``reward_head.json``)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastlib.data.windows import POOLS, WindowPolicy, window_policy
from contrastlib.errors import ModelLoadError
from contrastlib.heads.base import RewardHead
from contrastlib.registry import HEADS
from contrastlib.utils.io import atomic_path, write_json
from contrastlib.utils.modes import eval_mode

HEAD_FILE, HEAD_CONFIG = "reward_head.safetensors", "reward_head.json"


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

        h = hashlib.sha256(self.encoder.weights_fingerprint().encode())
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

        from contrastlib.loading import load_encoder

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
            kwargs["num_users"] = len(spec.get("users", []))
        head = head_cls(int(spec["dim"]), **kwargs)
        head.load_state_dict(state)
        head.eval()
        encoder = load_encoder(model_dir)
        return cls(encoder, head, users=spec.get("users", []), window_policy=spec.get("window_policy", "keep_final"),
                   mean=float(spec.get("mean", 0.0)), std=float(spec.get("std", 1.0)), pool=spec.get("pool", "text"),
                   **overrides)
