"""``contrastlib export``: a run, checkpoint or model as a directory other tools load
(a sentence-transformers directory for a text encoder)."""

from __future__ import annotations

import argparse

from contrastlib.cli.verbs import emit, verb


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="run dir, .ckpt, or any model spec")
    p.add_argument("--out", "-o", required=True)


@verb("export", "write a run, checkpoint or model as a sentence-transformers directory", arguments)
def run(args: argparse.Namespace) -> int:
    from contrastlib.loading import load_encoder

    encoder = load_encoder(args.source)
    out = encoder.save(args.out)
    emit(args, {"out": str(out), "dim": encoder.dim, **encoder.spec_dict()}, f"exported {encoder.kind} encoder to {out}")
    return 0
