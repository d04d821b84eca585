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
from contrastlib.errors import ContrastlibError

EXIT_USAGE = 2


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
    from contrastlib.jobs import load_encoder

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


def cmd_embed(args: argparse.Namespace) -> int:
    from contrastlib.data.readers import read_sentences

    texts = read_sentences(args.input)
    out = Path(args.out)
    if out.suffix not in (".npy", ".safetensors"):
        raise ContrastlibError(f"{out}: output must end in .npy or .safetensors")
    from contrastlib.jobs import load_encoder
    from contrastlib.utils.io import atomic_path

    encoder = load_encoder(args.model)
    emb = encoder.encode(
        texts, batch_size=args.batch_size, precision=args.precision, show_progress_bar=not args.no_progress
    )
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
        {"out": str(out), "n": len(texts), "dim": int(emb.shape[1])},
        f"wrote {len(texts)} x {emb.shape[1]} embeddings to {out}",
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from contrastlib.jobs import load_encoder

    encoder = load_encoder(args.source)
    out = encoder.save(args.out)
    _emit(args, {"out": str(out), "dim": encoder.dim, **encoder.spec_dict()}, f"exported a sentence-transformers model to {out}")
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

    p = add("embed", "embed one text per line into .npy or .safetensors")
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", required=True, help="text file, one text per line")
    p.add_argument("--out", "-o", required=True, help="output .npy or .safetensors")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_embed)

    p = add("export", "write a run, checkpoint or model as a sentence-transformers directory")
    p.add_argument("source", help="run dir, .ckpt, or any model spec")
    p.add_argument("--out", "-o", required=True)
    p.set_defaults(func=cmd_export)

    p = add("list", "list shipped recipes and registered encoders, poolings, losses, methods, samplers, ...")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ContrastlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
