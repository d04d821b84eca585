"""A generated mining job at corpus scale, from the real sentences in ``../shared/data``.

* ``pairs.jsonl``: ``--queries`` (anchor, positive) pairs from STS-B, SICK-R and SNLI
  (pairs scored at least 3 of 5, entailments), one pair per distinct anchor;
* ``corpus-N.txt`` for each size N: one passage per line. The first lines are the pairs'
  positives (so both miners' corpora, positives first and then the file, keep the file's
  order), then every other distinct real sentence (Wikipedia, the pairs' data, SciFact's
  titles and abstracts cut into sentences), then, to reach a million, those sentences again
  with their words in a seeded random order: the same lengths and vocabulary, so the
  tokenizer sees real lengths, and every passage distinct. Each size is a prefix of the
  next.

    python scripts/scale_corpus.py --out bench_out/scale --sizes 100000 300000 1000000
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def clean(text: str) -> str:
    return " ".join(text.split())


def real_pairs(data: Path) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name in ("stsb", "sickr"):
        for split in ("train", "dev", "test"):
            for r in _tsv(data / "sts" / name / f"{split}.tsv"):
                if float(r["score"]) >= (3.0 if name == "stsb" else 3.6):
                    pairs.append((clean(r["sentence1"]), clean(r["sentence2"])))
    for split in ("dev", "test"):
        pairs += [(clean(r["anchor"]), clean(r["positive"])) for r in _tsv(data / "nli" / f"snli-{split}.tsv")]
    return pairs


def real_sentences(data: Path) -> list[str]:
    out = [clean(s) for s in (data / "corpus" / "wiki-sentences.txt").read_text(encoding="utf-8").splitlines()]
    for name in ("stsb", "sickr"):
        for split in ("train", "dev", "test"):
            for r in _tsv(data / "sts" / name / f"{split}.tsv"):
                out += [clean(r["sentence1"]), clean(r["sentence2"])]
    for split in ("dev", "test"):
        for r in _tsv(data / "nli" / f"snli-{split}.tsv"):
            out += [clean(r["anchor"]), clean(r["positive"]), clean(r["negative"])]
    opener = gzip.open if (data / "retrieval/scifact/corpus.jsonl.gz").exists() else open
    path = data / "retrieval/scifact" / ("corpus.jsonl.gz" if opener is gzip.open else "corpus.jsonl")
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            out.append(clean(rec.get("title", "")))
            out += [clean(s) for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", rec.get("text", ""))]
    return [s for s in dict.fromkeys(out) if len(s.split()) >= 3]


def generate(out: Path, sizes: list[int], queries: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    pairs: dict[str, str] = {}
    for a, p in real_pairs(DATA):
        if a != p and a not in pairs and p not in pairs.values():
            pairs[a] = p
    chosen = rng.sample(sorted(pairs.items()), queries)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for a, p in chosen:
            fh.write(json.dumps({"anchor": a, "positive": p}) + "\n")
    passages = list(dict.fromkeys(p for _, p in chosen))
    seen = set(passages)
    pool = [s for s in real_sentences(DATA) if s not in seen]
    rng.shuffle(pool)
    for s in pool:
        if len(passages) >= max(sizes):
            break
        passages.append(s)
        seen.add(s)
    n_real = len(passages)
    i = 0
    while len(passages) < max(sizes):  # the real sentences again, words reordered
        s = pool[i % len(pool)].split()
        i += 1
        rng.shuffle(s)
        t = " ".join(s)
        if t not in seen:
            seen.add(t)
            passages.append(t)
    for n in sorted(sizes):
        with open(out / f"corpus-{n}.txt", "w", encoding="utf-8") as fh:
            fh.writelines(p + "\n" for p in passages[:n])
    return {"pairs": len(chosen), "real_passages": n_real, "passages": len(passages)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_out/scale")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(generate(Path(a.out), a.sizes, a.queries, a.seed))


if __name__ == "__main__":
    main()
