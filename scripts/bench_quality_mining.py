"""Does mining help? Fine-tune all-MiniLM-L6-v2 on SciFact's train qrels four ways and
score SciFact test nDCG@10 (fp32, as MTEB: the untouched model gives 64.51).

(a) in-batch negatives only: (query, relevant abstract) pairs, no-duplicates batches;
(b) mined hard negatives: ``contrastlib mine`` on the train split (ranks 10-50, relative
    margin 0.05, one negative per pair, n-tuple rows), the same batches;
(c) the cluster sampler on the pairs of (a) (batches from FAISS k-means clusters of the
    queries);
(d) (b) with re-mining every ``--remine-every`` steps from the whole corpus.

Every run: supervised SimCSE (InfoNCE, temperature 0.05), lr 2e-5, 10% warm-up, batch
32, ``--epochs`` epochs, max length 256 (the model's own), bf16-mixed training (auto on
this CPU), seed 42. All commands run through the CLI, as a user would.

    python scripts/bench_quality_mining.py --data ../shared/data/retrieval/scifact --out bench_out/quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cli(*args: str) -> dict[str, Any]:
    """Run ``contrastlib ARGS --json``; return its JSON line (raise with stderr on failure)."""
    cmd = [sys.executable, "-m", "contrastlib", *args, "--json"]
    print("$ contrastlib " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_pairs(data: Path, out: Path) -> Path:
    from contrastlib.mining import read_mining_input

    d = read_mining_input(str(data), split="train")
    with open(out, "w") as fh:
        for a, p in d.pairs:
            fh.write(json.dumps({"anchor": d.anchors[a], "positive": d.corpus_texts[p]}) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/retrieval/scifact")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--remine-every", type=int, default=10)
    ap.add_argument("--runs", default="a,b,c,d")
    ap.add_argument("--work", default=None, help="working folder (default: a new temp dir)")
    ap.add_argument("--out", default="bench_out/quality.json")
    args = ap.parse_args()
    data = Path(args.data).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_quality_"))
    work.mkdir(parents=True, exist_ok=True)
    pairs = train_pairs(data, work / "pairs.jsonl")
    report: dict[str, Any] = {"epochs": args.epochs, "batch_size": args.batch_size, "runs": {}}
    mined = work / "mined.jsonl"
    if {"b", "d"} & set(args.runs.split(",")):
        t = time.perf_counter()
        report["mining"] = cli(
            "mine", "-m", "all-MiniLM-L6-v2", "-d", str(data), "--split", "train", "-o", str(mined),
            "--output-format", "n-tuple", "--num-negatives", "1", "--range-min", "10", "--range-max", "50",
            "--relative-margin", "0.05", "--cache-dir", str(work / "cache"), "--no-progress",
        )
        report["mining"]["seconds"] = time.perf_counter() - t
    common = [
        "model.max_seq_length=256", f"data.batch_size={args.batch_size}", f"trainer.max_epochs={args.epochs}",
        "eval.sts=[]", f"output_dir={work / 'runs'}", "trainer.enable_progress_bar=false",
    ]
    runs = {
        "a": ("in-batch negatives", [f"data.train={pairs}"]),
        "b": ("mined hard negatives", [f"data.train={mined}"]),
        "c": ("cluster sampler", [f"data.train={pairs}", "data.sampler=cluster"]),
        "d": ("mined + re-mining", [f"data.train={mined}", f"remine.every_n_steps={args.remine_every}",
                                    f"remine.corpus={data / 'corpus.jsonl'}", "remine.range_min=10",
                                    "remine.range_max=50", "remine.relative_margin=0.05"]),
    }
    for key in args.runs.split(","):
        label, extra = runs[key]
        t = time.perf_counter()
        fit = cli("fit", "quickstart", f"name=quality-{key}", *common, *extra)
        ev = cli("eval", "retrieval", "-m", fit["model"], "-d", str(data), "--no-progress")
        report["runs"][key] = {
            "label": label, "ndcg@10": ev["ndcg@10"], "recall@100": ev["recall@100"], "mrr@10": ev["mrr@10"],
            "steps": fit["steps"], "train_seconds": fit["train_seconds"], "seconds": time.perf_counter() - t,
            "run_dir": fit["run_dir"],
        }
        print(key, report["runs"][key], file=sys.stderr, flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    print("| run | SciFact test nDCG@10 | MRR@10 | Recall@100 | steps | train s |\n|---|---|---|---|---|---|")
    print("| untouched all-MiniLM-L6-v2 (MTEB) | 64.51 | | | | |")
    for key, r in report["runs"].items():
        print(f"| ({key}) {r['label']} | {r['ndcg@10']:.2f} | {r['mrr@10']:.2f} | {r['recall@100']:.2f} | "
              f"{r['steps']} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
