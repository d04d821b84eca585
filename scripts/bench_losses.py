"""Time and peak memory of one forward + backward: plain vs chunked InfoNCE vs
pytorch-metric-learning's NTXentLoss, at batch 1k..32k, 384 dims, fp32, on this CPU.

NT-Xent rows score 2B views against each other ([2B, 2B] logits): ours plain, ours chunked
(``NTXentLoss(chunk_size=...)``) and PML's ``NTXentLoss`` compute the same value (checked
where both run). InfoNCE rows score B anchors against B candidates (MNRL / SimCSE form).
Each case runs in its own process; "extra MB" is peak RSS minus the RSS with the inputs
already allocated. Cases whose dense matrices would need more than --max-gb are skipped.

    python scripts/bench_losses.py --out bench_out/losses.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path
from typing import Any

DIM = 384


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def estimate_gb(kind: str, b: int) -> float:
    """Rough peak of the dense intermediates (chunked: none that grow with B x B)."""
    n = 2 * b if kind.startswith("nt_xent") or kind == "pml_nt_xent" else b
    if kind == "pml_nt_xent":
        # PML's NTXentLoss compares every positive pair with every negative pair:
        # a [n, n * (n - 2)] matrix (bool, then float), so memory grows as B^3.
        return n * n * (n - 2) * 5 / 1e9
    return n * n * {"nt_xent_plain": 20, "info_nce_plain": 20}.get(kind, 0) / 1e9


def run_case(kind: str, b: int, chunk: int, q: Any) -> None:
    import torch

    torch.manual_seed(0)
    z0 = torch.randn(b, DIM, requires_grad=True)
    z1 = (z0.detach() + 0.1 * torch.randn(b, DIM)).requires_grad_()
    from contrastlib.losses import InfoNCELoss, NTXentLoss

    if kind == "pml_nt_xent":
        from pytorch_metric_learning.losses import NTXentLoss as PML

        pml = PML(temperature=0.1)
        labels = torch.arange(b).repeat(2)
        fn = lambda: pml(torch.cat([z0, z1]), labels)  # noqa: E731
    else:
        loss = {
            "nt_xent_plain": NTXentLoss(0.1),
            "nt_xent_chunked": NTXentLoss(0.1, chunk_size=chunk),
            "info_nce_plain": InfoNCELoss(0.1),
            "info_nce_chunked": InfoNCELoss(0.1, chunk_size=chunk),
        }[kind]
        fn = lambda: loss(z0, z1)  # noqa: E731
    base = _rss_mb()
    start = time.perf_counter()
    value = fn()
    value.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put({"seconds": seconds, "extra_mb": peak - base, "loss": float(value.detach())})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="256,512,1024,4096,8192,16384,32768")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--max-gb", type=float, default=12.0)
    ap.add_argument("--out", default="bench_out/losses.json")
    a = ap.parse_args()
    kinds = ["nt_xent_plain", "nt_xent_chunked", "pml_nt_xent", "info_nce_plain", "info_nce_chunked"]
    results: dict[str, dict[str, Any]] = {}
    ctx = mp.get_context("spawn")
    for b in map(int, a.batches.split(",")):
        for kind in kinds:
            est = estimate_gb(kind, b)
            if est > a.max_gb:
                results[f"{kind}@{b}"] = {"skipped": f"needs ~{est:.0f} GB"}
                continue
            q = ctx.Queue()
            p = ctx.Process(target=run_case, args=(kind, b, a.chunk, q))
            p.start()
            p.join()
            results[f"{kind}@{b}"] = q.get() if p.exitcode == 0 else {"skipped": f"exit code {p.exitcode}"}
            print(kind, b, results[f"{kind}@{b}"], flush=True)

    print(f"\nforward + backward, fp32, {DIM} dims, chunk {a.chunk}")
    print(f"{'batch':>7} {'loss':<18}{'seconds':>9}{'extra MB':>10}{'x time':>8}{'x mem':>8}")
    for b in map(int, a.batches.split(",")):
        for family, ref in (("nt_xent", "nt_xent_plain"), ("info_nce", "info_nce_plain")):
            base = results.get(f"{ref}@{b}", {})
            for kind in kinds:
                if not kind.startswith(family) and not (family == "nt_xent" and kind == "pml_nt_xent"):
                    continue
                r = results[f"{kind}@{b}"]
                if "skipped" in r:
                    print(f"{b:>7} {kind:<18}{'-':>9}{'-':>10}{'':>8}{'':>8}  skipped: {r['skipped']}")
                    continue
                xt = f"{r['seconds'] / base['seconds']:.2f}" if "seconds" in base else "-"
                xm = f"{r['extra_mb'] / base['extra_mb']:.2f}" if "extra_mb" in base else "-"
                print(f"{b:>7} {kind:<18}{r['seconds']:>9.2f}{r['extra_mb']:>10.0f}{xt:>8}{xm:>8}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
