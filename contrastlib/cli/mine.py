"""``contrastlib mine``: hard negatives for (anchor, positive) pairs or a BEIR directory,
at parity with sentence-transformers' ``mine_hard_negatives``, resumable after a kill."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contrastlib.cli.verbs import add_devices_argument, emit, verb
from contrastlib.data.readers import add_bad_row_argument
from contrastlib.errors import ContrastlibError
from contrastlib.index.options import (
    add_index_arguments,
    check_index_dim,
    check_index_fits,
    index_spec,
)
from contrastlib.utils.precision import auto_encode_precision
from contrastlib.utils.tables import table


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True, help="HF id, model dir, sentence-transformers dir, run dir or .ckpt")
    p.add_argument("--data", "-d", required=True,
                   help="pair file (TSV/CSV/JSONL with anchor and positive columns) or a BEIR-layout directory")
    p.add_argument("--out", "-o", required=True, help="output .jsonl or .parquet (written when the job is done)")
    p.add_argument("--corpus", help="extra corpus: .txt (one text per line) or a BEIR corpus.jsonl")
    p.add_argument("--split", help="qrels split of a BEIR directory (default: test)")
    add_bad_row_argument(p, "row of a pair file")
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
    add_index_arguments(p)
    p.add_argument("--shard-size", type=int, default=1000, help="anchors per committed shard")
    p.add_argument("--embed-shard-size", type=int, default=2048,
                   help="texts per embedding-cache shard (what a killed run keeps; what --devices deals out)")
    p.add_argument("--cache-dir", help="embedding cache (default $CONTRASTLIB_CACHE or ~/.cache/contrastlib)")
    add_devices_argument(p)
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


@verb("mine", "mine hard negatives for (anchor, positive) pairs or a BEIR directory, resumably", arguments)
def run(args: argparse.Namespace) -> int:
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
            index=index_spec(args),
            shard_size=args.shard_size, embed_shard_size=args.embed_shard_size, batch_size=args.batch_size, precision=auto_encode_precision(args.precision),
            pad_to_multiple_of=args.pad_to_multiple_of or None, token_budget=args.token_budget,
            query_prompt=args.query_prompt, corpus_prompt=args.corpus_prompt, cross_encoder=args.cross_encoder,
        )
        out = check_output_path(args.out)
    except ValueError as exc:
        raise ContrastlibError(str(exc)) from None
    if args.cross_encoder and not Path(args.cross_encoder).is_dir():
        raise ContrastlibError(f"--cross-encoder {args.cross_encoder}: not a directory")
    data = read_mining_input(args.data, corpus=args.corpus, split=args.split,  # before the model loads
                             on_bad_row=args.on_bad_row,
                             store_root=Path(args.cache_dir) / "corpora" if args.cache_dir else None)
    if data.bad_rows:
        print(f"{args.data}: {data.bad_rows}", file=sys.stderr)
    check_index_fits(settings.index, len(data.corpus_ids))
    from contrastlib.index.cache import default_cache_dir
    from contrastlib.loading import LazyEncoder
    from contrastlib.mining import run_mining
    from contrastlib.pool import EncodePool, parse_devices

    encoder = LazyEncoder(args.model)  # loaded only for texts the embedding cache lacks
    check_index_dim(settings.index, encoder)
    devices = parse_devices(args.devices)
    report = run_mining(
        encoder, data, out, settings, cache_dir=args.cache_dir or default_cache_dir(),
        show_progress_bar=not args.no_progress, plot=not args.no_plot, log=lambda m: print(m, file=sys.stderr),
        pool=EncodePool(args.model, devices) if devices else None,
    )
    summary = report.summary
    st = report.stats
    rows = [["filter", "candidates dropped"]] + [[k, str(v)] for k, v in summary["dropped"].items()]
    rows.append(["not sampled (beyond num_negatives)", str(st.not_sampled)])
    lines = [
        f"mined {data.source}: {st.anchors} anchors, {st.pairs} pairs, corpus {len(data.corpus_ids)}, "
        f"window {report.range_max}, precision {settings.precision}"
        + (f"; {data.bad_rows_skipped} bad input rows skipped" if data.bad_rows_skipped else "")
        + (f"; {data.empty_documents} empty documents left out of the candidates" if data.empty_documents else ""),
        table(rows),
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
    emit(args, {k: v for k, v in summary.items() if k != "top_negatives"}, "\n".join(lines))
    return 0
