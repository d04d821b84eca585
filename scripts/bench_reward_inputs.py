"""Experiment: how the reward model reads a (dialogue, reply) text, on HH-RLHF.

A plain training loop beside the pipeline (not the shipped path), written to decide
whether a variant earned plumbing; ``method.pool`` (``reply``, ``reply_context``) is what
came of it, and ``bench_reward.py`` measures the shipped path. Every variant gets the same recipe as ``bench_reward.py``'s fine-tune
case: all-MiniLM-L6-v2, linear Bradley-Terry head, batch 32 pairs, AdamW lr 2e-5 (head
1e-3), 10% warm-up, linear decay, clipping 1.0, dropout off, bf16 autocast, length-sorted
groups of 16 texts padded to multiples of 32, the same seed and batch order.

Variants (``--variant``):

* ``mean``: the text ``context + reply`` as one segment, mean of every token, L2-normalised
  (what the pipeline does);
* ``reply``: the same input, mean over the final reply's tokens only (the context is read
  by attention but not pooled);
* ``reply-ctx-mlp``: ``reply``'s embedding concatenated with the mean of the context's
  tokens (both L2-normalised), under an MLP head (hidden 256): the reward can depend on
  the reply *given* the kind of context (a harmful request wants a refusal);
* ``reply-ctx``: the same features under a linear head, which cannot form that
  interaction: it separates the head's share of ``reply-ctx-mlp``'s gain from the context's;
* ``reply-ctx-prod-mlp``: ``reply-ctx-mlp`` with the elementwise product of the two halves
  as a third input to the MLP, the interaction given explicitly rather than learned.

    python scripts/bench_reward_inputs.py --variant reply --epochs 1   # the split of bench_reward.py

Results go to ``bench_out/reward_inputs.json`` (one key per variant, epochs and lr).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reward import WINDOW, _metrics_from_logits, _read, prepare

from contrastlib.data.windows import WindowPolicy
from contrastlib.encoders.text import resolve_model_path
from contrastlib.utils.marks import split_pool_mark


def split_text(policy: WindowPolicy, prompt: str, reply: str) -> tuple[str, int]:
    """The fitted text and the character where its final reply starts (0: reply cut),
    from the pool mark the policy puts there (``mark_reply=True``)."""
    marked = policy.fit(prompt, reply)
    assert marked is not None
    text, start = split_pool_mark(marked)
    return text, start or 0


class WithProduct(torch.nn.Module):
    """``[reply, context] -> [reply, context, reply * context]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, c = x.chunk(2, dim=-1)
        return torch.cat([r, c, r * c], dim=-1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="mean", choices=["mean", "reply", "reply-ctx", "reply-ctx-mlp", "reply-ctx-prod-mlp"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--work", default="bench_out/reward-data")
    p.add_argument("--out", default="bench_out/reward_inputs.json")
    p.add_argument("--max-pairs", type=int, default=0, help="a smoke run: the first N train pairs, N/4 test pairs")
    p.add_argument("--train-pairs", type=int, default=0,
                   help="a learning curve: N train pairs drawn at random (seeded), the whole test split")
    p.add_argument("--seed", type=int, default=0, help="head initialisation, batch order and --train-pairs draw")
    a = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    from transformers import AutoModel, AutoTokenizer

    work = Path(a.work)
    if not (work / "train.jsonl").is_file():
        prepare("../shared/data/preference/hh-rlhf", work)
    path = resolve_model_path("all-MiniLM-L6-v2")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    dim = model.config.hidden_size
    with_context = a.variant.startswith("reply-ctx")
    width = 2 * dim if with_context else dim
    layers: list[torch.nn.Module] = []
    if "-prod" in a.variant:
        layers.append(WithProduct())
        width = 3 * dim
    head: torch.nn.Module = (torch.nn.Sequential(*layers, torch.nn.Linear(width, 256), torch.nn.GELU(),
                                                 torch.nn.Linear(256, 1))
                             if a.variant.endswith("-mlp") else torch.nn.Linear(width, 1))
    policy = WindowPolicy(tok, WINDOW, mark_reply=True)

    def features(rows: list[dict]) -> list[dict]:
        out = []
        for r in rows:
            for key in ("chosen", "rejected"):
                text, start = split_text(policy, r["prompt"], r[key])
                enc = tok(text, truncation=True, max_length=WINDOW, return_offsets_mapping=True)
                if a.variant != "mean":
                    pool = [int(s >= start and e > s) for s, e in enc["offset_mapping"]]
                else:
                    pool = [1] * len(enc["input_ids"])
                types = [0] * len(enc["input_ids"])
                out.append({"ids": enc["input_ids"], "types": types, "pool": pool})
        return out

    train = _read(work / "train.jsonl")
    test = _read(work / "test.jsonl")
    if a.max_pairs:
        train, test = train[: a.max_pairs], test[: a.max_pairs // 4]
    if a.train_pairs:
        train = random.Random(1000 + a.seed).sample(train, a.train_pairs)
    ftrain, ftest = features(train), features(test)

    def embed(items: list[dict]) -> torch.Tensor:
        order = sorted(range(len(items)), key=lambda i: -len(items[i]["ids"]))
        out: list[torch.Tensor | None] = [None] * len(items)
        for g in range(0, len(order), 16):
            idx = order[g : g + 16]
            width = max(len(items[i]["ids"]) for i in idx)
            width = min(WINDOW, math.ceil(width / 32) * 32)
            ids = torch.zeros(len(idx), width, dtype=torch.long)
            types, mask, pool = (torch.zeros_like(ids) for _ in range(3))
            for j, i in enumerate(idx):
                n = len(items[i]["ids"])
                ids[j, :n] = torch.tensor(items[i]["ids"])
                types[j, :n] = torch.tensor(items[i]["types"])
                mask[j, :n] = 1
                pool[j, :n] = torch.tensor(items[i]["pool"])
            pool = torch.where(pool.sum(1, keepdim=True) > 0, pool, mask)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            m = pool.unsqueeze(-1).float()
            emb = (hidden.float() * m).sum(1) / m.sum(1)
            emb = F.normalize(emb, dim=-1)
            if with_context:  # the context's tokens (the whole text where there is none)
                c = (mask - pool).clamp_min(0)
                c = torch.where(c.sum(1, keepdim=True) > 0, c, mask).unsqueeze(-1).float()
                emb = torch.cat([emb, F.normalize((hidden.float() * c).sum(1) / c.sum(1), dim=-1)], dim=-1)
            for j, i in enumerate(idx):
                out[i] = emb[j]
        return torch.stack(out)  # type: ignore[arg-type]

    steps_per_epoch = math.ceil(len(train) / 32)
    total = steps_per_epoch * a.epochs
    warm = max(1, round(0.1 * total))
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": a.lr}, {"params": head.parameters(), "lr": 1e-3}],
                            weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / (total - warm))))
    rng = random.Random(42 + a.seed)
    start = time.perf_counter()
    step = 0
    for epoch in range(a.epochs):
        model.train()
        order = list(range(len(train)))
        rng.shuffle(order)
        for b in range(0, len(order), 32):
            rows = order[b : b + 32]
            items = [ftrain[2 * r] for r in rows] + [ftrain[2 * r + 1] for r in rows]
            r = head(embed(items)).squeeze(-1)
            loss = -F.logsigmoid(r[: len(rows)] - r[len(rows) :]).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(f"epoch {epoch} step {step}/{total} loss {loss.item():.4f} {time.perf_counter() - start:.0f}s",
                      flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        r = torch.cat([head(embed(ftest[i : i + 256])).squeeze(-1) for i in range(0, len(ftest), 256)])
    logit = (r[0::2] - r[1::2]).numpy()
    res = {**_metrics_from_logits(logit, [x["subset"] for x in test]), "train_seconds": seconds,
           "epochs": a.epochs, "lr": a.lr, "pairs": len(train)}
    print(json.dumps(res), flush=True)
    out = Path(a.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    key = f"{a.variant}-{a.epochs}ep-lr{a.lr:g}" + (f"-n{a.max_pairs}" if a.max_pairs else "")
    key += (f"-train{a.train_pairs}" if a.train_pairs else "") + (f"-seed{a.seed}" if a.seed else "")
    results[key] = res
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
