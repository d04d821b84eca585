"""Index options given on the command line (``--index``, ``--nlist``, ...), checked before
any work: an IVF index that cannot train on the corpus, or a PQ code size the model's
dimension does not divide, is a one-line error before anything is encoded."""

from __future__ import annotations

import argparse
from typing import Any

from contrastlib.errors import ContrastlibError
from contrastlib.index.faiss_index import KINDS, IndexSpec


def add_index_arguments(p: argparse.ArgumentParser, *, help_kind: str = "FAISS index") -> None:
    p.add_argument("--index", choices=list(KINDS), default="flat", help=f"{help_kind} (default flat: exact)")
    p.add_argument("--nlist", type=int, default=1024, help="IVF cells")
    p.add_argument("--nprobe", type=int, default=16, help="IVF cells searched")
    p.add_argument("--ef-search", type=int, default=64, help="HNSW efSearch")
    p.add_argument("--search-device", default="auto",
                   help="exact search: auto (torch on a CUDA GPU where present, else FAISS on the CPU), faiss, "
                        "a torch device (cpu, cuda, cuda:1), or several (cuda:0,cuda:1: the corpus split over them)")
    p.add_argument("--score-dtype", choices=["fp32", "bf16"], default="fp32",
                   help="torch exact search's score precision (bf16: candidates re-scored in fp32)")


def index_spec(args: argparse.Namespace) -> IndexSpec:
    """The ``--index`` options as an IndexSpec; bad values are a one-line error."""
    if args.batch_size < 1:
        raise ContrastlibError(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        spec = IndexSpec(kind=args.index, nlist=args.nlist, nprobe=args.nprobe, ef_search=args.ef_search,
                         search_device=args.search_device, score_dtype=args.score_dtype)
    except ValueError as exc:
        raise ContrastlibError(f"--index: {exc}") from None
    for name in spec.torch_devices:  # before any work: a device that is not here
        if name.startswith("cuda"):
            import torch

            index = torch.device(name).index or 0
            if not torch.cuda.is_available() or index >= torch.cuda.device_count():
                raise ContrastlibError(f"--search-device {spec.search_device}: no CUDA device {name} here")
    return spec


def check_index_dim(spec: IndexSpec, encoder: Any) -> None:
    """IVF-PQ needs the dimension to be a multiple of its code size (only IVF-PQ asks: asking
    a lazily loaded model its dimension loads it)."""
    if spec.kind != "ivf_pq":
        return
    dim = int(encoder.dim)
    if dim % spec.pq_bytes:
        raise ContrastlibError(f"--index ivf_pq: the model's dimension {dim} is not a multiple of {spec.pq_bytes} bytes")


def check_index_fits(spec: IndexSpec, n_docs: int, option: str = "--index") -> None:
    """An IVF index needs at least ``nlist`` documents to train: say so before encoding."""
    if spec.kind == "ivf_pq" and n_docs < max(spec.nlist, 256):
        raise ContrastlibError(
            f"{option} ivf_pq: needs at least {max(spec.nlist, 256)} documents to train, the corpus has {n_docs}"
        )
    if spec.kind in ("ivf_flat", "ivf_pq") and n_docs < spec.nlist:
        raise ContrastlibError(
            f"{option} {spec.kind}: the corpus has {n_docs} documents, fewer than nlist={spec.nlist}; use --index flat or hnsw"
        )
