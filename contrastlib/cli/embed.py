"""``contrastlib embed``: one text per line into ``.npy`` or ``.safetensors``, through the
sharded embedding cache (a killed run resumes at its first missing shard)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from contrastlib.cli.verbs import add_devices_argument, emit, verb
from contrastlib.errors import ContrastlibError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", required=True, help="text file, one text per line")
    p.add_argument("--out", "-o", required=True, help="output .npy or .safetensors")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--cache-dir", help="sharded embedding cache (default $CONTRASTLIB_CACHE or ~/.cache/contrastlib)")
    p.add_argument("--shard-size", type=int, default=2048, help="texts per cache shard: what a killed run keeps")
    p.add_argument("--no-progress", action="store_true")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="text put before every input text (e.g. 'query: ')")
    prompt.add_argument("--prompt-name", help="a prompt the model names (its export's prompts: query, document)")
    p.add_argument("--dim", type=int, help="keep the first N dimensions, renormalised (a Matryoshka-trained model's sizes)")
    add_devices_argument(p)


@verb("embed", "embed one text per line into .npy or .safetensors", arguments)
def run(args: argparse.Namespace) -> int:
    from contrastlib.data.corpus import lines_store
    from contrastlib.data.prompts import with_prompt

    store = lines_store(args.input, root=Path(args.cache_dir) / "corpora" if args.cache_dir else None)
    out = Path(args.out)
    if out.suffix not in (".npy", ".safetensors"):
        raise ContrastlibError(f"{out}: output must end in .npy or .safetensors")
    from contrastlib.index.cache import EmbeddingCache, default_cache_dir
    from contrastlib.loading import LazyEncoder
    from contrastlib.pool import EncodePool, parse_devices
    from contrastlib.utils.io import atomic_path

    # Through the sharded cache: a killed embed resumes at its first missing shard, and
    # the same texts with the same model are not encoded twice.
    encoder = LazyEncoder(args.model)
    if args.dim is not None and not 1 <= args.dim <= encoder.dim:
        raise ContrastlibError(f"--dim: {args.dim} is not between 1 and the model's {encoder.dim} dimensions")
    if args.prompt_name is not None:
        named = encoder.load().prompts
        if args.prompt_name not in named:
            raise ContrastlibError(f"--prompt-name: {args.model} names no prompt {args.prompt_name!r}; "
                                   f"it has: {', '.join(named) or 'none'}")
        args.prompt = named[args.prompt_name]
    texts = with_prompt(store, args.prompt)  # the cache keys the texts as encoded
    cache = EmbeddingCache(args.cache_dir or default_cache_dir(), shard_size=args.shard_size)
    devices = parse_devices(args.devices)
    if devices:
        cache.pool = EncodePool(args.model, devices)
    entry = cache.ensure(encoder, texts, batch_size=args.batch_size, precision=args.precision,
                         show_progress_bar=not args.no_progress, model_fp=encoder.weights_fingerprint())
    prepare = None
    if args.dim is not None:  # the cache keeps every dimension: another --dim reuses it
        from contrastlib.index import l2_normalise

        def prepare(x: Any) -> Any:
            return l2_normalise(x[:, : args.dim])

    with atomic_path(out) as tmp:  # written a shard at a time, each row in its place
        shape = entry.write(tmp, out.suffix.lstrip("."), prepare)
    reused = cache.last_stats.get("reused")
    emit(
        args,
        {"out": str(out), "n": len(texts), "dim": shape[1], **cache.last_stats},
        f"wrote {len(texts)} x {shape[1]} embeddings to {out}"
        + (f" ({reused} of {cache.last_stats['shards']} shards reused)" if reused else ""),
    )
    return 0
