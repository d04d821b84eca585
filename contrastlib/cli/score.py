"""``contrastlib score``: the reward of every ``{prompt, response}`` row of a JSONL file,
written in shards (resumable after a kill)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contrastlib.cli.verbs import add_devices_argument, emit, verb
from contrastlib.data.readers import add_bad_row_argument
from contrastlib.errors import ContrastlibError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True, help="reward run dir (or its model/ dir)")
    p.add_argument("--input", "-i", required=True, help="JSON lines {prompt, response[, user]}")
    p.add_argument("--out", "-o", required=True, help="output .jsonl: each input row with reward, reward_normalized")
    p.add_argument("--shard-size", type=int, default=1000, help="rows per committed shard")
    add_bad_row_argument(p, "input row")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--no-progress", action="store_true")
    add_devices_argument(p)


@verb("score", "reward of every (prompt, response) row of a JSONL file, resumable after a kill", arguments)
def run(args: argparse.Namespace) -> int:
    from contrastlib.data.readers import BadRows
    from contrastlib.scoring import load_scorer, read_score_input, score_file
    from contrastlib.utils.precision import auto_encode_precision

    bad = BadRows(args.on_bad_row, key="--on-bad-row")
    rows = read_score_input(args.input, bad)  # bad rows fail before the model loads
    if bad.count:
        print(f"{args.input}: {bad.summary()}", file=sys.stderr)
    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise ContrastlibError(f"{out}: the output must end in .jsonl")
    from contrastlib.pool import parse_devices
    from contrastlib.scoring import ScorePool

    devices = parse_devices(args.devices)
    overrides = {"precision": auto_encode_precision(args.precision), "batch_size": args.batch_size}
    model = load_scorer(args.model, **overrides)
    report = score_file(model, args.input, out, model_fp=model.fingerprint(), shard_size=args.shard_size,
                        show_progress_bar=not args.no_progress, read=(rows, bad),
                        pool=ScorePool(args.model, devices, overrides) if devices else None)
    text = f"scored {report.rows} rows -> {report.out} ({report.shards_reused}/{report.shards} shards reused)" + (
        f"; {report.bad_rows_skipped} bad input rows skipped" if report.bad_rows_skipped else "")
    emit(args, {"verb": "score", "out": str(report.out), "rows": report.rows, "shards": report.shards,
                "shards_reused": report.shards_reused, "bad_rows_skipped": report.bad_rows_skipped}, text)
    return 0
