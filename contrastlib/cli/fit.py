"""``contrastlib fit CONFIG [key=value ...]``: train a method from a YAML file or a recipe."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contrastlib.cli.verbs import emit, verb
from contrastlib.utils.tables import table


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML file, or a recipe name (contrastlib list): e.g. quickstart")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.max_steps=10")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config and read the data, print the resolved config, train nothing")


@verb("fit", "train a method from a YAML config or a shipped recipe, with key=value overrides", arguments)
def run(args: argparse.Namespace) -> int:
    from contrastlib.config import load_config, to_yaml
    from contrastlib.pipeline import describe, fit, plan_fit

    cfg = load_config(args.config, args.overrides)
    plan = plan_fit(cfg)  # reads and checks the data: bad input fails before any work
    if args.dry_run:
        text = to_yaml(cfg).rstrip() + "\n---\n" + describe(plan)
        emit(args, {"ok": True, "rows": len(plan.data.rows), "precision": plan.precision}, text)
        return 0
    result = fit(cfg, log=lambda m: print(m, file=sys.stderr), plan=plan)
    if not result.is_zero:  # another DDP rank: rank 0 reports
        return 0
    rows = [["data", "metric", "before", "after", "delta"]]
    short_names = len({Path(x).name for x in result.before}) == len(result.before)
    for name, before in result.before.items():
        metric = result.main_metrics.get(name, next(iter(before)))
        after = result.after.get(name)
        rows.append([
            Path(name).name if short_names else name,
            metric,
            f"{before[metric]:.2f}",
            f"{after[metric]:.2f}" if after else "-",
            f"{after[metric] - before[metric]:+.2f}" if after else "-",
        ])
    text = (
        f"run: {result.run_dir}  ({result.steps} steps, {result.seconds:.0f} s, precision {result.precision})\n"
        f"model: {result.run_dir / 'model'}"
    )
    if len(rows) > 1:
        text = table(rows) + "\n" + text
    emit(args, {
        "run_dir": str(result.run_dir), "model": str(result.run_dir / "model"), "steps": result.steps,
        "train_seconds": result.seconds, "precision": result.precision, "before": result.before, "after": result.after,
    }, text)
    return 0
