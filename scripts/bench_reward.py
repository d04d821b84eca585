"""Reward models on HH-RLHF: our heads and fine-tuning against TRL's RewardTrainer and a
logistic-regression floor, on one split.

Data: ``../shared/data/preference/hh-rlhf`` (helpful-base, helpful-rejection-sampled,
harmless-base test files), read with bad rows skipped and counted (34 pairs with
identical replies, 8 with an empty one), split by a hash of the prompt
(:func:`contrastlib.data.preference.split_by_prompt`, 20% of prompts to test, salt "").
Every text is ``prompt + reply`` fitted to all-MiniLM-L6-v2's 256-token window by our
default policy (keep the final reply, cut the context from the start); TRL receives the
same fitted texts, so both sides see identical inputs.

Cases (each a fresh process; ``--cases`` picks some; cases in ``--out`` are skipped, so a
killed run resumes):

* ``floor-logreg``: scikit-learn logistic regression on ``e_chosen - e_rejected`` of frozen
  embeddings (both orders, C=1);
* ``ours-<head>-frozen``: ``contrastlib fit`` with the reward method, frozen encoder,
  10 epochs of the head (batch 64, AdamW lr 1e-3); embedding time included in the wall time;
* ``ours-bt-frozen-reply`` / ``ours-bt-mlp-frozen-reply-context``: frozen heads on
  ``method.pool=reply`` / ``reply_context`` embeddings;
* ``ours-finetune``: the encoder fine-tuned with a linear Bradley-Terry head, 1 epoch,
  batch 32, lr 2e-5 (head 1e-3), dropout off (the recipe's, as TRL's ``disable_dropout``
  default), length-sorted groups of 16 rows, precision auto (bf16 on this CPU): TRL's recipe;
* ``ours-finetune-3ep`` / ``ours-finetune-5ep``: the same for 3 / 5 epochs at lr 3e-5, for the accuracy goal;
* ``ours-finetune-3ep-aux``: 3 epochs with the auxiliary contrastive loss (``method.aux_weight=0.1``:
  InfoNCE of each prompt against its chosen reply, the batch's other replies and its own
  rejected one as negatives);
* ``ours-finetune-3ep-512``: 3 epochs with a 512-token window (MiniLM's position table is
  512 long; the model card's 256 is its training length), so more of each dialogue fits;
* ``ours-finetune-reply`` / ``ours-finetune-3ep-reply``: 1 epoch (TRL's recipe) / 3 epochs at
  lr 3e-5 with ``method.pool=reply``: the encoder reads the whole fitted text and pools
  only the final reply's tokens;
* ``ours-finetune-reply-context`` / ``ours-finetune-3ep-reply-context``: the same with
  ``method.pool=reply_context`` (the reply's pool and the context's, side by side) under
  a Bradley-Terry MLP head (256 hidden units), so the reward can weigh a reply by the
  kind of request;
* ``trl-fp32``: TRL's RewardTrainer on ``AutoModelForSequenceClassification`` of the same
  model, 1 epoch, batch 32, lr 2e-5, dropout off (its default), gradient clipping at 1.0
  (its default; ours is given the same), fp32 (its default on CPU), the same threads;
* ``trl-bf16``: the same with ``bf16=True`` (CPU autocast), for the ratio at equal precision.

Reported per case: test accuracy, ECE, per-subset accuracy, wall seconds and training
pairs per second (pairs x epochs / wall seconds).

    python scripts/bench_reward.py --out bench_out/reward.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import in_child, peak_rss_mb

from contrastlib.utils.io import write_json

MODEL = "all-MiniLM-L6-v2"
WINDOW = 256
HEADS = {
    "bt": {"name": "bradley_terry"},
    "bt-mlp": {"name": "bradley_terry", "hidden": 256},
    "gaussian": {"name": "gaussian", "hidden": 256},
    "robust": {"name": "robust_bradley_terry", "flip_rate": 0.1, "hidden": 256},
    "gpm": {"name": "gpm", "rank": 4, "hidden": 256},
    "nca": {"name": "nca", "hidden": 256},
}
FINETUNE: dict[str, tuple[int, float, list[str], str]] = {  # epochs, encoder lr, further overrides, head (HEADS)
    "ours-finetune": (1, 2e-5, [], "bt"),
    "ours-finetune-3ep": (3, 3e-5, [], "bt"),
    "ours-finetune-5ep": (5, 3e-5, [], "bt"),
    "ours-finetune-3ep-aux": (3, 3e-5, ["method.aux_weight=0.1"], "bt"),
    "ours-finetune-3ep-512": (3, 3e-5, ["model.max_seq_length=512"], "bt"),
    "ours-finetune-reply": (1, 2e-5, ["method.pool=reply"], "bt"),
    "ours-finetune-3ep-reply": (3, 3e-5, ["method.pool=reply"], "bt"),
    "ours-finetune-reply-context": (1, 2e-5, ["method.pool=reply_context"], "bt-mlp"),
    "ours-finetune-reply-context-seed0": (1, 2e-5, ["method.pool=reply_context", "seed=0"], "bt-mlp"),
    "ours-finetune-2ep-reply-context": (2, 2e-5, ["method.pool=reply_context"], "bt-mlp"),
    "ours-finetune-3ep-reply-context": (3, 3e-5, ["method.pool=reply_context"], "bt-mlp"),
}
#: Frozen cases with other pooling: case -> (head, overrides).
FROZEN_POOLED: dict[str, tuple[str, list[str]]] = {
    "ours-bt-frozen-reply": ("bt", ["method.pool=reply"]),
    "ours-bt-mlp-frozen-reply-context": ("bt-mlp", ["method.pool=reply_context"]),
}
CASES = ["floor-logreg", *(f"ours-{h}-frozen" for h in HEADS), *FROZEN_POOLED, *FINETUNE, "trl-fp32", "trl-bf16"]


def prepare(data: str, work: Path) -> dict[str, Any]:
    """Split once; write train/test files (pairs format) and the fitted texts."""
    from transformers import AutoTokenizer

    from contrastlib.data.preference import read_preferences
    from contrastlib.data.prompt_split import split_by_prompt
    from contrastlib.data.windows import WindowPolicy
    from contrastlib.encoders.text import resolve_model_path

    prefs = read_preferences(data, on_bad_row="skip")
    train, test = split_by_prompt(prefs.rows, 0.2)
    work.mkdir(parents=True, exist_ok=True)
    policy = WindowPolicy(AutoTokenizer.from_pretrained(resolve_model_path(MODEL)), WINDOW)
    for name, rows in (("train", train), ("test", test)):
        with open(work / f"{name}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps({"prompt": r.prompt, "chosen": r.responses[0], "rejected": r.responses[1],
                                    "subset": r.subset}) + "\n")
        with open(work / f"{name}-fitted.jsonl", "w") as f:
            for r in rows:
                c, j = (policy.fit(r.prompt, x) for x in r.responses)
                f.write(json.dumps({"chosen": c, "rejected": j, "subset": r.subset}) + "\n")
    return {"train_pairs": len(train), "test_pairs": len(test), "skipped": dict(prefs.skipped),
            "window": policy.report.summary()}


def _metrics_from_logits(logit: Any, subsets: list[str]) -> dict[str, Any]:
    import numpy as np

    from contrastlib.evaluation.reward import expected_calibration_error

    logit = np.asarray(logit, dtype=np.float64)
    prob = 1 / (1 + np.exp(-logit))
    ece, _ = expected_calibration_error(np.concatenate([prob, 1 - prob]),
                                        np.concatenate([np.ones_like(prob), np.zeros_like(prob)]))
    correct = np.where(logit > 0, 1.0, np.where(logit < 0, 0.0, 0.5))
    per = {s: float(correct[[i for i, x in enumerate(subsets) if x == s]].mean()) for s in sorted(set(subsets))}
    return {"accuracy": float(correct.mean()), "ece": ece, "subsets": per}


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def floor_case(work: str, cache: str) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from contrastlib.encoders.text import TextEncoder
    from contrastlib.index.cache import EmbeddingCache

    torch.set_num_threads(2)
    start = time.perf_counter()
    enc = TextEncoder(MODEL, max_seq_length=WINDOW)
    c = EmbeddingCache(cache)
    out = {}
    for name in ("train", "test"):
        rows = _read(Path(work) / f"{name}-fitted.jsonl")
        texts = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
        emb = c.embed(enc, texts, precision="bf16", desc=f"embed {name}")
        n = len(rows)
        out[name] = (emb[:n] - emb[n:], [r["subset"] for r in rows])
    x, _ = out["train"]
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(np.concatenate([x, -x]), np.r_[np.ones(len(x)), np.zeros(len(x))])
    xt, subsets = out["test"]
    logit = clf.decision_function(xt)
    seconds = time.perf_counter() - start
    return {**_metrics_from_logits(logit, subsets), "seconds": seconds, "pairs_per_second": len(x) / seconds,
            "peak_rss_mb": peak_rss_mb()}


def ours_case(work: str, cache: str, head: str | None, runs: str, epochs: int = 1, lr: float = 2e-5,
              name: str = "finetune", extra: list[str] | None = None,
              finetune_head: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    from contrastlib.config import load_config
    from contrastlib.pipeline import fit

    torch.set_num_threads(2)
    frozen = head is not None
    overrides = [
        f"name={head if head and name == 'finetune' else name}", f"output_dir={runs}", f"data.train={work}/train.jsonl",
        f"eval.reward=[{work}/test.jsonl]", "method.heldout_fraction=0.0", f"model.max_seq_length={WINDOW}",
        "trainer.enable_progress_bar=false", "trainer.precision=auto", "trainer.log_every_n_steps=50",
        "trainer.checkpoint_every_n_steps=1000000",
    ]
    if frozen:
        overrides += ["method.frozen=true", "trainer.max_epochs=10", "data.batch_size=64", "optim.lr=1e-3",
                      "optim.warmup_ratio=0.05", *(extra or [])]
    else:
        overrides += ["method.frozen=false", f"trainer.max_epochs={epochs}", "data.batch_size=32", f"optim.lr={lr}",
                      "method.head_lr=1e-3", "optim.warmup_ratio=0.1",
                      "trainer.gradient_clip_val=1.0",  # TRL's max_grad_norm default
                      *(extra or [])]
    cfg = load_config("reward-hh", overrides)
    if frozen:
        cfg.method["head"] = HEADS[head]
    else:
        cfg.method["head"] = dict(finetune_head or HEADS["bt"])
    start = time.perf_counter()
    result = fit(cfg, log=lambda m: print(m, file=sys.stderr))
    wall = time.perf_counter() - start
    after = next(v for k, v in result.after.items() if k.startswith("reward:"))
    pairs = len(Path(f"{work}/train.jsonl").read_text().splitlines()) * cfg.trainer.max_epochs
    return {"accuracy": after["accuracy"], "ece": after["ece"],
            "subsets": {k[4:]: v for k, v in after.items() if k.startswith("acc/")},
            "section_acc": after.get("section_acc"), "length_corr": after.get("length_corr"),
            "train_seconds": result.seconds, "seconds": wall, "pairs_per_second": pairs / wall,
            "precision": result.precision, "peak_rss_mb": peak_rss_mb()}


def trl_case(work: str, out_dir: str, bf16: bool = False) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from contrastlib.encoders.text import resolve_model_path

    torch.set_num_threads(2)
    path = resolve_model_path(MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.eos_token is None:  # TRL appends an EOS; BERT-style tokenizers have none: use [SEP]
        tok.eos_token = tok.sep_token
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    train = _read(Path(work) / "train-fitted.jsonl")
    ds = Dataset.from_list([{"chosen": r["chosen"], "rejected": r["rejected"]} for r in train])
    args = RewardConfig(output_dir=out_dir, per_device_train_batch_size=32, num_train_epochs=1, learning_rate=2e-5,
                        # +1: TRL appends an EOS to every text, and drops (not truncates)
                        # examples over max_length; the fitted texts fill the window exactly
                        max_length=WINDOW + 1, report_to=[], save_strategy="no", logging_steps=50, bf16=bf16,
                        use_cpu=True, dataloader_num_workers=0, seed=42,
                        warmup_steps=max(1, round(0.1 * len(train) / 32)))  # 10%, as ours
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    test = _read(Path(work) / "test-fitted.jsonl")
    model.eval()

    @torch.no_grad()
    def rewards(texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 64):
            batch = tok(texts[i : i + 64], padding=True, truncation=True, max_length=WINDOW, return_tensors="pt")
            out.append(model(**batch).logits.squeeze(-1))
        return torch.cat(out)

    logit = (rewards([r["chosen"] for r in test]) - rewards([r["rejected"] for r in test])).numpy()
    return {**_metrics_from_logits(logit, [r["subset"] for r in test]), "train_seconds": seconds,
            "seconds": seconds, "pairs_per_second": len(train) / seconds, "precision": "bf16" if bf16 else "fp32",
            "peak_rss_mb": peak_rss_mb()}


def run_case(name: str, *rest: Any) -> None:
    """Child-process entry: ``rest`` is the case's arguments, then in_child's queue."""
    *args, queue = rest
    queue.put(globals()[name](*args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/preference/hh-rlhf")
    p.add_argument("--out", default="bench_out/reward.json")
    p.add_argument("--work", default="bench_out/reward-data")
    p.add_argument("--cases", nargs="*", default=CASES)
    a = p.parse_args()
    unknown = sorted(set(a.cases) - set(CASES))
    if unknown:
        p.error(f"unknown case {unknown[0]!r}; cases: {', '.join(CASES)}")
    out, work = Path(a.out), Path(a.work).resolve()
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    results["data"] = prepare(a.data, work)
    import torch
    import trl

    results["env"] = {"torch": torch.__version__, "trl": trl.__version__, "cpus": os.cpu_count()}
    cache, runs = str(work / "runs" / "embedding-cache"), str(work / "runs")
    for case in a.cases:
        if case in results:
            print(f"{case}: done before, skipped")
            continue
        if case == "floor-logreg":
            r = in_child(run_case, "floor_case", str(work), cache)
        elif case.startswith("trl-"):
            r = in_child(run_case, "trl_case", str(work), str(work / "trl"), case == "trl-bf16")
        elif case in FINETUNE:
            epochs, lr, extra, head = FINETUNE[case]
            r = in_child(run_case, "ours_case", str(work), cache, None, runs, epochs, lr, case.removeprefix("ours-"),
                         extra, HEADS[head])
        elif case in FROZEN_POOLED:
            head, extra = FROZEN_POOLED[case]
            r = in_child(run_case, "ours_case", str(work), cache, head, runs, 1, 2e-5, case.removeprefix("ours-"), extra)
        else:
            r = in_child(run_case, "ours_case", str(work), cache, case.split("-", 1)[1].rsplit("-", 1)[0], runs)
        results[case] = r
        print(case, json.dumps(r), flush=True)
        write_json(out, results)
    ratios = {}
    for peer in ("trl-fp32", "trl-bf16"):
        for case in CASES:
            if peer in results and case in results and case.startswith("ours"):
                ratio = results[case]["pairs_per_second"] / results[peer]["pairs_per_second"]
                ratios[f"{case} vs {peer} (pairs/s)"] = round(ratio, 2)
    results["speedup"] = ratios
    write_json(out, results)
    print(json.dumps({k: (v.get("accuracy"), v.get("seconds")) for k, v in results.items() if isinstance(v, dict) and "accuracy" in v}, indent=1))


if __name__ == "__main__":
    main()
