"""``contrastlib`` command line: fit, eval, embed, export, list.

User errors (bad data, bad config, unknown model) print one line ``error: ...`` on
stderr and exit with code 2. With ``--json`` the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastlib import __version__
from contrastlib.errors import ContrastlibError, one_line

EXIT_USAGE = 2
#: The job failed for a reason outside the input (a full disk, a file-size limit).
EXIT_FAILURE = 1


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if text:
        print(text)
    if getattr(args, "json", False):
        print(json.dumps(payload))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- verbs
def cmd_fit(args: argparse.Namespace) -> int:
    from contrastlib.config import load_config, to_yaml

    cfg = load_config(args.config, args.overrides)
    from contrastlib.pipeline import describe, fit, plan_fit

    plan = plan_fit(cfg)  # reads and checks the data: bad input fails before any work
    if args.dry_run:
        text = to_yaml(cfg).rstrip() + "\n---\n" + describe(plan)
        _emit(args, {"ok": True, "rows": len(plan.data.rows), "precision": plan.precision}, text)
        return 0
    result = fit(cfg, log=lambda m: print(m, file=sys.stderr), plan=plan)
    if not result.is_zero:  # another DDP rank: rank 0 reports
        return 0
    rows = [["data", "metric", "before", "after", "delta"]]
    short_names = len({Path(x).name for x in result.before}) == len(result.before)
    for name, before in result.before.items():
        metric = result.main_metrics.get(name, next(iter(before)))
        after = result.after.get(name)
        rows.append(
            [
                Path(name).name if short_names else name,
                metric,
                f"{before[metric]:.2f}",
                f"{after[metric]:.2f}" if after else "-",
                f"{after[metric] - before[metric]:+.2f}" if after else "-",
            ]
        )
    text = (
        f"run: {result.run_dir}  ({result.steps} steps, {result.seconds:.0f} s, precision {result.precision})\n"
        f"model: {result.run_dir / 'model'}"
    )
    if len(rows) > 1:
        text = _table(rows) + "\n" + text
    _emit(
        args,
        {
            "run_dir": str(result.run_dir),
            "model": str(result.run_dir / "model"),
            "steps": result.steps,
            "train_seconds": result.seconds,
            "precision": result.precision,
            "before": result.before,
            "after": result.after,
        },
        text,
    )
    return 0


def cmd_eval_sts(args: argparse.Namespace) -> int:
    from contrastlib.data.readers import read_scored_pair_files

    data = read_scored_pair_files(args.data)  # bad data fails before the model loads
    from contrastlib.evaluation import evaluate_sts
    from contrastlib.loading import load_encoder

    encoder = load_encoder(args.model)
    result = evaluate_sts(
        encoder,
        data,
        batch_size=args.batch_size,
        precision=args.precision,
        show_progress_bar=not args.no_progress,
    )
    text = (
        f"STS  {', '.join(args.data)}  pairs={result.n_pairs}  spearman={result.spearman:.2f}  "
        f"pearson={result.pearson:.2f}  alignment={result.alignment:.3f}  uniformity={result.uniformity:.3f}"
    )
    _emit(args, {"task": "sts", "data": args.data, "model": args.model, **result.as_dict()}, text)
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from contrastlib.data.beir import read_beir, split_spec

    root, split = split_spec(args.data) if args.split is None else (args.data, args.split)
    spec = _index_spec(args)
    data = read_beir(root, split)  # bad data fails before the model loads
    from contrastlib.evaluation.retrieval import (
        DEFAULT_KS,
        evaluate_retrieval,
        unwritable_trec_id,
        write_trec_run,
    )
    from contrastlib.loading import LazyEncoder

    _check_index_fits(spec, len(data.corpus_ids))
    if args.run_file:
        bad = unwritable_trec_id([*data.query_ids, *data.corpus_ids])
        if bad is not None:
            raise ContrastlibError(f"--run-file: id {bad!r} holds whitespace, which a TREC run cannot hold")
    # loaded only if an embedding is not in the cache: a warm evaluation never loads it
    encoder = LazyEncoder(args.model)
    _check_index_dim(spec, encoder)
    embed = None
    if args.cache_dir:
        from contrastlib.index.cache import EmbeddingCache

        cache = EmbeddingCache(args.cache_dir)
        embed = cache.embedder(
            encoder, batch_size=args.batch_size, precision=args.precision, show_progress_bar=not args.no_progress
        )
    result = evaluate_retrieval(
        encoder, data, top_k=args.top_k, index_spec=spec, ignore_identical_ids=args.ignore_identical_ids,
        embed=embed, batch_size=args.batch_size, precision=args.precision, show_progress_bar=not args.no_progress,
    )
    if args.run_file:
        write_trec_run(args.run_file, result.run)
    m = result.x100()
    rows = [["metric", *[f"@{k}" for k in (1, 3, 5, 10, 100)]]]
    for name in DEFAULT_KS:
        rows.append([name, *[f"{m[f'{name}@{k}']:.2f}" if f"{name}@{k}" in m else "" for k in (1, 3, 5, 10, 100)]])
    text = (
        f"retrieval  {data.name}  queries={result.n_queries}  documents={result.n_documents}  "
        f"nDCG@10={m['ndcg@10']:.2f}\n" + _table(rows)
    )
    if args.run_file:
        text += f"\nrun file: {args.run_file}"
    _emit(
        args,
        {"task": "retrieval", "data": str(root), "split": split, "model": args.model,
         "n_queries": result.n_queries, "n_documents": result.n_documents, **m},
        text,
    )
    return 0


def cmd_eval_reward(args: argparse.Namespace) -> int:
    from contrastlib.data.preference import read_preferences

    prefs = read_preferences(args.data, on_bad_row=args.on_bad_row)  # bad data fails before the model loads
    from contrastlib.evaluation.reward import evaluate_reward, plot_reliability
    from contrastlib.methods.reward import RewardModel

    model = RewardModel.load(args.model, precision=_auto_encode_precision(args.precision), batch_size=args.batch_size)
    result = evaluate_reward(model, prefs)
    m = result.metrics
    lines = [f"reward  {args.data}  {prefs.kind}: {len(prefs)} rows"
             + (f" ({sum(prefs.skipped.values())} bad rows skipped: {dict(prefs.skipped)})" if prefs.skipped else "")]
    lines.append("  ".join(f"{k}={v:.4f}" for k, v in m.items() if "/" not in k and k not in ("pairs", "rows")))
    if result.subsets:
        rows = [["subset", "pairs", "accuracy"]]
        rows += [[name, str(int(s["pairs"])), f"{s['accuracy']:.4f}"] for name, s in result.subsets.items()]
        rows.append(["section-weighted", "", f"{m['section_acc']:.4f}"])
        lines.append(_table(rows))
    if args.plot:
        lines.append(f"reliability diagram: {plot_reliability(result.reliability, args.plot, title=str(args.data))}")
    _emit(args, {"task": "reward", "data": args.data, "model": args.model, **m,
                 "subsets": result.subsets, "skipped": dict(prefs.skipped)}, "\n".join(lines))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from contrastlib.data.readers import BadRows
    from contrastlib.scoring import read_score_input, score_file

    bad = BadRows(args.on_bad_row, key="--on-bad-row")
    rows = read_score_input(args.input, bad)  # bad rows fail before the model loads
    if bad.count:
        print(f"{args.input}: {bad.summary()}", file=sys.stderr)
    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise ContrastlibError(f"{out}: the output must end in .jsonl")
    from contrastlib.methods.reward import RewardModel

    model = RewardModel.load(args.model, precision=_auto_encode_precision(args.precision), batch_size=args.batch_size)
    report = score_file(model, args.input, out, model_fp=model.fingerprint(), shard_size=args.shard_size,
                        show_progress_bar=not args.no_progress, read=(rows, bad))
    text = f"scored {report.rows} rows -> {report.out} ({report.shards_reused}/{report.shards} shards reused)" + (
        f"; {report.bad_rows_skipped} bad input rows skipped" if report.bad_rows_skipped else "")
    _emit(args, {"verb": "score", "out": str(report.out), "rows": report.rows, "shards": report.shards,
                 "shards_reused": report.shards_reused, "bad_rows_skipped": report.bad_rows_skipped}, text)
    return 0


def _image_features(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """``--train`` / ``--test`` read and checked (every image decoded) before ``--model``
    loads; then both embedded by the model's backbone: ``(train, y_train, test, y_test)``."""
    if args.batch_size < 1:
        raise ContrastlibError(f"--batch-size must be >= 1, got {args.batch_size}")
    from contrastlib.data.images import read_images

    sets = {}
    for which, spec in (("train", args.train), ("test", args.test)):
        sets[which] = read_images(spec, verify="decode")
        if sets[which].labels is None:
            raise ContrastlibError(f"--{which} {spec}: no labels (class sub-folders, or a labels array)")
    from contrastlib.evaluation.knn import embed_images
    from contrastlib.loading import load_encoder

    encoder = load_encoder(args.model, **({"cifar_stem": True} if args.cifar_stem else {}))
    kw = {"size": args.size, "channels": args.channels, "batch_size": args.batch_size,
          "precision": args.precision, "num_workers": args.num_workers, "show_progress_bar": not args.no_progress}
    train, ytr = embed_images(encoder, sets["train"], **kw)
    test, yte = embed_images(encoder, sets["test"], **kw)
    return train, ytr, test, yte


def cmd_eval_knn(args: argparse.Namespace) -> int:
    from contrastlib.evaluation.knn import PRESETS, knn_classify

    k, temperature = PRESETS[args.preset]
    k, temperature = args.k or k, args.temperature or temperature
    if k < 1 or temperature <= 0:
        raise ContrastlibError(f"--k must be >= 1 and --temperature > 0, got {k} and {temperature}")
    train, ytr, test, yte = _image_features(args)
    r = knn_classify(train, ytr, test, yte, k=k, temperature=temperature)
    _emit(
        args,
        {"task": "knn", "model": args.model, "train": args.train, "test": args.test, "preset": args.preset,
         **r.as_dict()},
        f"kNN  {args.test}  train={r.n_train}  test={r.n_test}  k={r.k}  T={r.temperature:g}  "
        f"top1={r.top1:.2f}  top5={r.top5:.2f}",
    )
    return 0


def cmd_eval_linear(args: argparse.Namespace) -> int:
    from contrastlib.evaluation.linear import linear_probe

    C: float | str = "auto"
    if args.C != "auto":
        try:
            C = float(args.C)
        except ValueError:
            C = -1.0
        if not C > 0:
            raise ContrastlibError(f"--C must be 'auto' or a number > 0, got {args.C!r}")
    if args.max_iter < 1:
        raise ContrastlibError(f"--max-iter must be >= 1, got {args.max_iter}")
    train, ytr, test, yte = _image_features(args)
    r = linear_probe(train, ytr, test, yte, C=C, max_iter=args.max_iter)
    search = "  ".join(f"C={c:g}: {a:.2f}" for c, a in r.search.items())
    _emit(
        args,
        {"task": "linear", "model": args.model, "train": args.train, "test": args.test, **r.as_dict()},
        f"linear probe  {args.test}  train={r.n_train}  test={r.n_test}  C={r.C:g}  "
        f"top1={r.top1:.2f}  top5={r.top5:.2f}" + (f"\nheld-out accuracy by C: {search}" if search else ""),
    )
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from contrastlib.data.readers import read_sentences

    texts = read_sentences(args.input)
    out = Path(args.out)
    if out.suffix not in (".npy", ".safetensors"):
        raise ContrastlibError(f"{out}: output must end in .npy or .safetensors")
    from contrastlib.index.cache import EmbeddingCache
    from contrastlib.loading import LazyEncoder
    from contrastlib.utils.io import atomic_path

    # Through the sharded cache: a killed embed resumes at its first missing shard, and
    # the same texts with the same model are not encoded twice.
    encoder = LazyEncoder(args.model)
    cache = EmbeddingCache(args.cache_dir or default_cache_dir(), shard_size=args.shard_size)
    emb = cache.embed(encoder, texts, batch_size=args.batch_size, precision=args.precision,
                      show_progress_bar=not args.no_progress, model_fp=encoder.weights_fingerprint())
    with atomic_path(out) as tmp:
        if out.suffix == ".npy":
            import numpy as np

            with open(tmp, "wb") as fh:
                np.save(fh, emb)
        else:
            import torch
            from safetensors.torch import save_file

            save_file({"embeddings": torch.as_tensor(emb)}, str(tmp))
    _emit(
        args,
        {"out": str(out), "n": len(texts), "dim": int(emb.shape[1]), **cache.last_stats},
        f"wrote {len(texts)} x {emb.shape[1]} embeddings to {out}"
        + (f" ({cache.last_stats['reused']} of {cache.last_stats['shards']} shards reused)"
           if cache.last_stats.get("reused") else ""),
    )
    return 0


def default_cache_dir() -> Path:
    """``$CONTRASTLIB_CACHE`` or ``~/.cache/contrastlib``: embeddings reused across runs."""
    root = os.environ.get("CONTRASTLIB_CACHE") or Path.home() / ".cache" / "contrastlib"
    return Path(root) / "embeddings"


def _index_spec(args: argparse.Namespace) -> Any:
    """The ``--index`` options as an IndexSpec; bad values are a one-line error."""
    from contrastlib.index import IndexSpec

    if args.batch_size < 1:
        raise ContrastlibError(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        return IndexSpec(kind=args.index, nlist=args.nlist, nprobe=args.nprobe, ef_search=args.ef_search)
    except ValueError as exc:
        raise ContrastlibError(f"--index: {exc}") from None


def _check_index_dim(spec: Any, encoder: Any) -> None:
    if spec.kind != "ivf_pq":  # (only IVF-PQ cares; asking a lazy model its dim loads it)
        return
    dim = getattr(encoder, "dim", None)
    if dim and dim % spec.pq_bytes:
        raise ContrastlibError(f"--index ivf_pq: the model's dimension {dim} is not a multiple of {spec.pq_bytes} bytes")


def _check_index_fits(spec: object, n_docs: int, option: str = "--index") -> None:
    """An IVF index needs at least ``nlist`` documents to train: say so before encoding."""
    kind, nlist = getattr(spec, "kind", "flat"), getattr(spec, "nlist", 0)
    if kind == "ivf_pq" and n_docs < max(nlist, 256):
        raise ContrastlibError(f"{option} ivf_pq: needs at least {max(nlist, 256)} documents to train, the corpus has {n_docs}")
    if kind in ("ivf_flat", "ivf_pq") and n_docs < nlist:
        raise ContrastlibError(
            f"{option} {kind}: the corpus has {n_docs} documents, fewer than nlist={nlist}; use --index flat or hnsw"
        )


def _auto_encode_precision(precision: str) -> str:
    """``auto``: bf16 where the hardware does bf16 matrix work natively, else fp32."""
    if precision != "auto":
        return precision
    from contrastlib.training.precision import encode_precision, resolve_precision

    return encode_precision("auto", resolve_precision("auto")[0])


def cmd_mine(args: argparse.Namespace) -> int:
    from contrastlib.mining import MineOptions, MineSettings, read_mining_input
    from contrastlib.mining.output import check_output_path

    if args.pad_to_multiple_of is not None and args.pad_to_multiple_of < 0:
        raise ContrastlibError(f"--pad-to-multiple-of must be >= 0 (0: exact widths), got {args.pad_to_multiple_of}")
    if args.token_budget is not None and args.token_budget < 0:
        raise ContrastlibError(f"--token-budget must be >= 0 (0: no cap), got {args.token_budget}")
    try:
        options = MineOptions(
            range_min=args.range_min, range_max=args.range_max, num_negatives=args.num_negatives,
            sampling_strategy=args.sampling_strategy, absolute_margin=args.absolute_margin,
            relative_margin=args.relative_margin, max_score=args.max_score, min_score=args.min_score,
            near_duplicate=None if args.near_duplicate <= 0 else args.near_duplicate, seed=args.seed,
        )
        settings = MineSettings(
            options=options, output_format=args.output_format, output_scores=args.output_scores,
            index=_index_spec(args),
            shard_size=args.shard_size, batch_size=args.batch_size, precision=_auto_encode_precision(args.precision),
            pad_to_multiple_of=args.pad_to_multiple_of or None, token_budget=args.token_budget,
            query_prompt=args.query_prompt, corpus_prompt=args.corpus_prompt, cross_encoder=args.cross_encoder,
        )
        out = check_output_path(args.out)
    except ValueError as exc:
        raise ContrastlibError(str(exc)) from None
    if args.cross_encoder and not Path(args.cross_encoder).is_dir():
        raise ContrastlibError(f"--cross-encoder {args.cross_encoder}: not a directory")
    data = read_mining_input(args.data, corpus=args.corpus, split=args.split,  # before the model loads
                             on_bad_row=args.on_bad_row)
    if data.bad_rows:
        print(f"{args.data}: {data.bad_rows}", file=sys.stderr)
    _check_index_fits(settings.index, len(data.corpus_ids))
    from contrastlib.loading import LazyEncoder
    from contrastlib.mining import run_mining

    encoder = LazyEncoder(args.model)  # loaded only for texts the embedding cache lacks
    _check_index_dim(settings.index, encoder)
    report = run_mining(
        encoder, data, out, settings, cache_dir=args.cache_dir or default_cache_dir(),
        show_progress_bar=not args.no_progress, plot=not args.no_plot, log=lambda m: print(m, file=sys.stderr),
    )
    summary = report.summary
    st = report.stats
    rows = [["filter", "candidates dropped"]] + [[k, str(v)] for k, v in summary["dropped"].items()]
    rows.append(["not sampled (beyond num_negatives)", str(st.not_sampled)])
    lines = [
        f"mined {data.source}: {st.anchors} anchors, {st.pairs} pairs, corpus {len(data.corpus_ids)}, "
        f"window {report.range_max}, precision {settings.precision}"
        + (f"; {data.bad_rows_skipped} bad input rows skipped" if data.bad_rows_skipped else ""),
        _table(rows),
        f"negatives kept: {st.kept}; pairs short of {options.num_negatives} negatives: {st.short_pairs} "
        f"({st.missing_negatives} missing, not padded)",
        f"wrote {report.rows} {settings.output_format} rows to {out}",
        f"summary: {report.files['summary']}" + (f"  plot: {report.files['plot']}" if report.files["plot"] else ""),
    ]
    if report.top_negatives:
        lines.append(f"highest-scoring negatives kept (check for false negatives; all in {report.files['top_negatives']}):")
        for r in report.top_negatives[:5]:
            lines.append(f"  {r['score']:.3f} (positive {r['positive_score']:.3f})  {r['anchor'][:60]!r} -> {r['negative'][:70]!r}")
    if report.shards_reused or report.embed_shards_reused:
        lines.append(f"resumed: {report.shards_reused} mining shard(s), {report.embed_shards_reused} embedding shard(s) reused")
    _emit(args, {k: v for k, v in summary.items() if k != "top_negatives"}, "\n".join(lines))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from contrastlib.loading import load_encoder

    encoder = load_encoder(args.source)
    out = encoder.save(args.out)
    _emit(args, {"out": str(out), "dim": encoder.dim, **encoder.spec_dict()}, f"exported a sentence-transformers model to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from contrastlib.report import screenshot, write_report

    out = write_report(args.run_dir, args.out)
    payload = {"report": str(out)}
    text = f"report: {out}"
    if args.screenshot:
        shot = screenshot(out, args.screenshot)
        payload["screenshot"] = str(shot)
        text += f"\nscreenshot: {shot}"
    _emit(args, payload, text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import contrastlib.components  # noqa: F401
    from contrastlib.config.load import recipes
    from contrastlib.registry import ALL

    payload: dict[str, list[dict[str, str]]] = {}
    lines: list[str] = []
    shipped = recipes()
    payload["recipes"] = [{"name": n, "summary": d, "path": str(p)} for n, (p, d) in shipped.items()]
    lines.append("recipes (contrastlib fit NAME):")
    width = max((len(n) for n in shipped), default=0)
    lines.extend(f"  {n:<{width}}  {d}" for n, (_, d) in shipped.items())
    for reg in ALL:
        entries = list(reg.entries())
        payload[reg.plural] = [{"name": e.name, "summary": e.summary} for e in entries]
        lines.append(f"{reg.plural}:")
        lines.extend(f"  {e.name:<16} {e.summary}" for e in entries)
        if not entries:
            lines.append("  (none yet)")
    _emit(args, payload, "\n".join(lines))
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastlib", description="Contrastive representation learning on PyTorch Lightning."
    )
    parser.add_argument("--version", action="version", version=f"contrastlib {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
        return p

    p = add("fit", "train a method from a YAML config or a shipped recipe, with key=value overrides")
    p.add_argument("config", help="YAML file, or a recipe name (contrastlib list): e.g. quickstart")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.max_steps=10")
    p.add_argument(
        "--dry-run", action="store_true",
        help="validate the config and read the data, print the resolved config, train nothing",
    )
    p.set_defaults(func=cmd_fit)

    p_eval = sub.add_parser("eval", help="evaluate a model", description="evaluate a model")
    eval_sub = p_eval.add_subparsers(dest="task", required=True, metavar="TASK")
    p = eval_sub.add_parser("sts", help="Spearman/Pearson (x100) of cosine similarity on scored pairs")
    p.add_argument("--model", "-m", required=True, help="HF id, model dir, sentence-transformers dir, run dir or .ckpt")
    p.add_argument(
        "--data", "-d", required=True, action="append",
        help="scored-pair TSV (sentence1 sentence2 score) or a directory of them; repeat to pool files",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_eval_sts)

    p = eval_sub.add_parser(
        "retrieval", help="nDCG/MRR/MAP/accuracy/precision/recall@k on a BEIR-layout directory, as MTEB scores it"
    )
    p.add_argument("--model", "-m", required=True, help="HF id, model dir, sentence-transformers dir, run dir or .ckpt")
    p.add_argument("--data", "-d", required=True, help="BEIR-layout dir: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    p.add_argument("--split", default=None, help="qrels split (default: test; DIR:split also works)")
    p.add_argument("--top-k", type=int, default=100,
                   help="documents per query in the run file (default 100; the metrics always see the top 100)")
    p.add_argument("--index", choices=["flat", "ivf_flat", "hnsw", "ivf_pq"], default="flat",
                   help="FAISS index (default flat: exact)")
    p.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    p.add_argument("--nprobe", type=int, default=16, help="IVF cells searched")
    p.add_argument("--ef-search", type=int, default=64, help="HNSW efSearch")
    p.add_argument("--ignore-identical-ids", action="store_true",
                   help="never match a query to the document with its own id (BEIR's default; MTEB's is off)")
    p.add_argument("--run-file", help="also write a TREC run file here")
    p.add_argument("--cache-dir", help="embedding cache directory (reused by later runs)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_eval_retrieval)

    p = eval_sub.add_parser("reward", help="reward model: pairwise accuracy, ECE, length bias, per-subset accuracy")
    p.add_argument("--model", "-m", required=True, help="reward run dir (or its model/ dir)")
    p.add_argument("--data", "-d", required=True,
                   help="preference file or directory (HH-RLHF, {prompt, chosen, rejected}, lists, unpaired; .jsonl[.gz])")
    p.add_argument("--on-bad-row", choices=["error", "skip"], default="error",
                   help="error (default): stop at the first bad row; skip: leave bad rows out and count them")
    p.add_argument("--plot", help="write a reliability diagram (PNG) here")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_eval_reward)

    def image_eval(name: str, help: str) -> argparse.ArgumentParser:
        p = eval_sub.add_parser(name, help=help)
        p.add_argument("--model", "-m", required=True,
                       help="image run dir, 'timm:NAME' (random init: a floor) or 'pixels' (raw pixels: a floor)")
        p.add_argument("--train", required=True, help="labelled image set: folder, .zip[:SUB], .npz, IDX")
        p.add_argument("--test", required=True, help="labelled image set, same forms")
        p.add_argument("--size", type=int, default=32, help="image side the model sees (default 32)")
        p.add_argument("--channels", type=int, choices=[1, 3], default=3)
        p.add_argument("--cifar-stem", action="store_true", help="with timm:NAME, the 3x3 stride-1 CIFAR stem")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--num-workers", type=int, default=0)
        p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
        p.add_argument("--no-progress", action="store_true")
        p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
        return p

    p = image_eval("knn", "weighted kNN top-1/top-5 of an image encoder (train set -> test set)")
    p.add_argument("--preset", choices=["lightly", "solo-learn"], default="lightly",
                   help="lightly: k 200, T 0.1; solo-learn: k 20, T 0.07")
    p.add_argument("--k", type=int, default=None, help="neighbours (overrides the preset)")
    p.add_argument("--temperature", type=float, default=None, help="vote temperature (overrides the preset)")
    p.set_defaults(func=cmd_eval_knn)

    p = image_eval("linear", "linear probe (logistic regression on frozen features) of an image encoder")
    p.add_argument("--C", default="auto",
                   help="inverse L2 strength, or 'auto': chosen on a held-out fifth of --train (default)")
    p.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations")
    p.set_defaults(func=cmd_eval_linear)

    p = add("embed", "embed one text per line into .npy or .safetensors")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", required=True, help="text file, one text per line")
    p.add_argument("--out", "-o", required=True, help="output .npy or .safetensors")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--cache-dir", help="sharded embedding cache (default $CONTRASTLIB_CACHE or ~/.cache/contrastlib)")
    p.add_argument("--shard-size", type=int, default=2048, help="texts per cache shard: what a killed run keeps")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_embed)

    p = add("mine", "mine hard negatives for (anchor, positive) pairs or a BEIR directory, resumably")
    p.add_argument("--model", "-m", required=True, help="HF id, model dir, sentence-transformers dir, run dir or .ckpt")
    p.add_argument("--data", "-d", required=True,
                   help="pair file (TSV/CSV/JSONL with anchor and positive columns) or a BEIR-layout directory")
    p.add_argument("--out", "-o", required=True, help="output .jsonl or .parquet (written when the job is done)")
    p.add_argument("--corpus", help="extra corpus: .txt (one text per line) or a BEIR corpus.jsonl")
    p.add_argument("--split", help="qrels split of a BEIR directory (default: test)")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="a malformed row of a pair file: stop naming its line (default), or skip and count it")
    p.add_argument("--range-min", type=int, default=0, help="skip this many best candidates that pass the filters")
    p.add_argument("--range-max", type=int, default=None,
                   help="consider this many best candidates (default: as sentence-transformers)")
    p.add_argument("--num-negatives", type=int, default=3)
    p.add_argument("--sampling-strategy", choices=["top", "random"], default="top")
    p.add_argument("--absolute-margin", type=float,
                   help="drop candidates scoring above positive - margin (the anchor's lowest positive)")
    p.add_argument("--relative-margin", type=float,
                   help="drop candidates scoring above positive - |positive| * margin (the anchor's lowest positive)")
    p.add_argument("--max-score", type=float, help="drop candidates scoring above this")
    p.add_argument("--min-score", type=float, help="drop candidates scoring below this")
    p.add_argument("--near-duplicate", type=float, default=0.98,
                   help="drop candidates this similar to a positive (cosine; 0 turns it off; default 0.98)")
    p.add_argument("--cross-encoder", help="sentence-transformers CrossEncoder directory to rescore candidates")
    p.add_argument("--output-format", choices=["triplet", "n-tuple", "labeled-pair", "labeled-list"], default="triplet")
    p.add_argument("--output-scores", action="store_true", help="write the scores too")
    p.add_argument("--index", choices=["flat", "ivf_flat", "hnsw", "ivf_pq"], default="flat")
    p.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    p.add_argument("--nprobe", type=int, default=16, help="IVF cells searched")
    p.add_argument("--ef-search", type=int, default=64, help="HNSW efSearch")
    p.add_argument("--shard-size", type=int, default=1000, help="anchors per committed shard")
    p.add_argument("--cache-dir", help="embedding cache (default $CONTRASTLIB_CACHE or ~/.cache/contrastlib)")
    p.add_argument("--query-prompt", default="", help="text put before every anchor when encoding")
    p.add_argument("--corpus-prompt", default="", help="text put before every corpus text when encoding")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="encoding precision; auto: bf16 on CPUs with AMX / AVX512-BF16 and bf16 GPUs, else fp32")
    p.add_argument("--pad-to-multiple-of", type=int, default=None, metavar="N",
                   help="round each encode batch's width up to a multiple of N tokens (0: exact widths)")
    p.add_argument("--token-budget", type=int, default=None, metavar="N",
                   help="at most N tokens (rows x width) per encode forward pass; default 4096 on CPU and no cap "
                        "on GPU; 0: no cap (--batch-size rows every time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plot", action="store_true",
                   help="skip OUT.scores.png (drawing it is most of a run on a warm embedding cache)")
    p.set_defaults(func=cmd_mine)

    p = add("score", "reward of every (prompt, response) row of a JSONL file, resumable after a kill")
    p.add_argument("--model", "-m", required=True, help="reward run dir (or its model/ dir)")
    p.add_argument("--input", "-i", required=True, help="JSON lines {prompt, response[, user]}")
    p.add_argument("--out", "-o", required=True, help="output .jsonl: each input row with reward, reward_normalized")
    p.add_argument("--shard-size", type=int, default=1000, help="rows per committed shard")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="a malformed input row: stop naming its line (default), or leave it out and count it")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_score)

    p = add("export", "write a run, checkpoint or model as a sentence-transformers directory")
    p.add_argument("source", help="run dir, .ckpt, or any model spec")
    p.add_argument("--out", "-o", required=True)
    p.set_defaults(func=cmd_export)

    p = add("report", "write a run directory's one-page HTML report (config, environment, curves, evaluations, plots)")
    p.add_argument("run_dir", help="a run directory (fit writes RUN_DIR/report.html itself at the end of a run)")
    p.add_argument("--out", "-o", help="where to write it (default RUN_DIR/report.html)")
    p.add_argument("--screenshot", metavar="PNG", help="also render it in headless Chromium to this PNG")
    p.set_defaults(func=cmd_report)

    p = add("list", "list shipped recipes and registered encoders, poolings, losses, methods, samplers, ...")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ContrastlibError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # A full disk, a file-size limit, a permission or a vanished mount: not a bug in
        # the input, and every output was written under a temporary name, so the
        # previous one stands. One line, exit 1.
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
