"""``contrastlib report RUN_DIR``: the run on one self-contained HTML page."""

from __future__ import annotations

import argparse

from contrastlib.cli.verbs import emit, verb


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory (fit writes RUN_DIR/report.html itself at the end of a run)")
    p.add_argument("--out", "-o", help="where to write it (default RUN_DIR/report.html)")
    p.add_argument("--screenshot", metavar="PNG", help="also render it in headless Chromium to this PNG")


@verb("report", "write a run directory's one-page HTML report (config, environment, curves, evaluations, plots)",
      arguments)
def run(args: argparse.Namespace) -> int:
    from contrastlib.report import screenshot, write_report

    out = write_report(args.run_dir, args.out)
    payload = {"report": str(out)}
    text = f"report: {out}"
    if args.screenshot:
        shot = screenshot(out, args.screenshot)
        payload["screenshot"] = str(shot)
        text += f"\nscreenshot: {shot}"
    emit(args, payload, text)
    return 0
