"""``contrastlib report RUN_DIR``: one self-contained HTML page that shows a run.

The page holds, from what the run directory already has:

* the run's status, steps, time and precision, and its environment (package versions,
  git commit, hardware) from ``contrastlib_run.json``;
* the resolved ``config.yaml``;
* the evaluations before and after training from ``metrics.json``, one table per set,
  with the change;
* the training curves (loss, learning rate and anything else logged per step) from every
  ``logs/**/metrics.csv`` (a resumed run's logs included), drawn with matplotlib;
* every PNG the run wrote (evaluation curves, t-SNE maps, mining score histograms,
  reliability diagrams), embedded.

Everything is inline (images as ``data:`` URIs, nothing fetched; one line of script marks
images the browser could not decode), so the one file can be mailed or archived. It is written atomically. ``fit`` writes it as
``report.html`` at the end of every run, failed ones included.

:func:`screenshot` renders a page with a headless Chromium when one is installed.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from contrastlib.errors import ConfigError
from contrastlib.utils.io import atomic_path

REPORT = "report.html"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d8dde3;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
.sub{color:#5b6673} .card{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:12px 16px;margin:8px 0}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.finished{background:#dff3e4;color:#1a6b32} .failed{background:#fbe0e0;color:#9b1c1c} .running{background:#fff1d6;color:#8a5a00}
table{border-collapse:collapse;font-variant-numeric:tabular-nums} td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:top}
th{color:#5b6673;font-weight:600} td.num{text-align:right} .up{color:#1a6b32} .down{color:#9b1c1c}
pre{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:10px;overflow:auto;font-size:12px}
figure{margin:10px 0;background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:8px}
figure img{max-width:100%;height:auto;display:block} figcaption{color:#5b6673;font-size:12px;margin-top:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:4px 24px}
"""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text())
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}


def read_logs(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every numeric column of every ``logs/**/metrics.csv``, as (step, value) by name,
    later logs (a resume) overriding earlier ones at the same step."""
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted((run_dir / "logs").rglob("metrics.csv"), key=lambda p: (len(p.parts), str(p))):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    step = int(float(row.get("step") or ""))
                except ValueError:
                    continue
                for key, value in row.items():
                    if key in ("step", "epoch") or not value:
                        continue
                    try:
                        v = float(value)
                    except ValueError:
                        continue
                    if math.isfinite(v):
                        series[key][step] = v
    return {k: sorted(v.items()) for k, v in sorted(series.items())}


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _curves_png(series: dict[str, list[tuple[int, float]]]) -> bytes | None:
    """Loss first, then learning rates, then the rest; one small panel each."""
    if not series:
        return None
    from matplotlib.figure import Figure

    def rank(name: str) -> tuple[int, str]:
        return (0 if "loss" in name else 1 if name.startswith("lr") else 2, name)

    # a value that never changes (a pair count) is a table's business, not a curve's
    names = sorted((n for n in series if "loss" in n or len({v for _, v in series[n]}) > 1), key=rank)[:12]
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 2.9 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        xs, ys = zip(*series[name], strict=True)
        ax.plot(xs, ys, color="tab:blue", lw=1, marker="o" if len(xs) < 30 else None, ms=3)
        if len(ys) >= 20 and "loss" in name:  # a running mean over about a tenth of the run
            k = max(2, len(ys) // 10)
            smooth = [sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))]
            ax.plot(xs, smooth, color="tab:orange", lw=1.6, label=f"mean of {k}")
            ax.legend(fontsize=7)
        parts = name.split("/")  # eval names carry a file's whole path: keep its name
        ax.set_title(name if len(parts) <= 3 else f"{parts[0]}/.../{parts[-2]}/{parts[-1]}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v: Any) -> str:
    """Numbers for a table: small floats to 4 places, whole numbers with separators."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v))
    if not math.isfinite(v):
        return str(v)
    if isinstance(v, float) and abs(v) < 1000:
        return f"{v:.4f}"
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:.2f}"


def _eval_tables(metrics: dict[str, Any]) -> str:
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    out = []
    for name in dict.fromkeys([*before, *after]):
        b, a = before.get(name) or {}, after.get(name) or {}
        rows = []
        for key in dict.fromkeys([*b, *a]):
            vb, va = b.get(key), a.get(key)
            delta = ""
            if isinstance(vb, (int, float)) and isinstance(va, (int, float)) and vb != va:
                d = va - vb
                delta = f'<td class="num {"up" if d > 0 else "down"}">{d:+.4f}</td>'
            rows.append(f"<tr><td>{html.escape(key)}</td><td class='num'>{'' if vb is None else _fmt(vb)}</td>"
                        f"<td class='num'>{'' if va is None else _fmt(va)}</td>{delta or '<td></td>'}</tr>")
        out.append(f"<h3>{html.escape(name)}</h3><table><tr><th>metric</th><th>before</th><th>after</th>"
                   f"<th>change</th></tr>{''.join(rows)}</table>")
    return "".join(out) or "<p class='sub'>No evaluations in this run.</p>"


def _kv(d: dict[str, Any]) -> str:
    return "<table>" + "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v) if not isinstance(v, dict) else html.escape(json.dumps(v))}</td></tr>"
        for k, v in d.items() if v not in (None, "", [], {})
    ) + "</table>"


def build_report(run_dir: str | Path) -> str:
    """The report page of ``run_dir`` as an HTML string."""
    run = Path(run_dir)
    marker = _read_json(run / "contrastlib_run.json")
    if not marker:
        raise ConfigError(f"{run}: not a run directory (no readable contrastlib_run.json)")
    metrics = _read_json(run / "metrics.json")
    status = str(marker.get("status", "unknown"))
    summary = {
        "kind": marker.get("kind"), "status": status, "error": marker.get("error"),
        "started": marker.get("started"), "updated": marker.get("updated"),
        "starts": len(marker.get("starts", [])) or None,
        "steps": metrics.get("steps", marker.get("steps")),
        "train seconds": metrics.get("train_seconds", marker.get("train_seconds")),
        "precision": metrics.get("precision") or (marker.get("launch") or {}).get("precision"),
    }
    env = {**(marker.get("versions") or {}), "git commit": marker.get("git_commit")}
    hardware = marker.get("hardware") or {}
    launch = marker.get("launch") or {}
    config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""

    parts = [
        f"<h1>{html.escape(run.name)}</h1>",
        f"<div class='sub'>{html.escape(str(run.resolve()))} &middot; "
        f"<span class='status {html.escape(status)}' id='status'>{html.escape(status)}</span></div>",
        "<h2>Run</h2><div class='card grid'>", _kv(summary), _kv(launch), "</div>",
        "<h2>Evaluation</h2><div class='card' id='evaluation'>", _eval_tables(metrics), "</div>",
    ]
    curves = _curves_png(read_logs(run))
    parts.append("<h2>Training curves</h2>")
    if curves:
        parts.append(f"<figure id='curves'><img alt='training curves' src='{_png_uri(curves)}'>"
                     "<figcaption>every value logged per step (logs/**/metrics.csv)</figcaption></figure>")
    else:
        parts.append("<p class='sub'>No step logs.</p>")
    pngs = sorted(p for p in run.rglob("*.png") if "model" not in p.relative_to(run).parts[:1])
    if pngs:
        parts.append("<h2>Plots</h2>")
        for p in pngs:
            rel = p.relative_to(run)
            parts.append(f"<figure><img alt='{html.escape(str(rel))}' src='{_png_uri(p.read_bytes())}'>"
                         f"<figcaption>{html.escape(str(rel))}</figcaption></figure>")
    parts += ["<h2>Environment</h2><div class='card grid'>", _kv(env), _kv(hardware), "</div>",
              "<h2>Resolved config</h2>", f"<pre id='config'>{html.escape(config)}</pre>",
              f"<p class='sub'>Written {time.strftime('%Y-%m-%d %H:%M:%S')} by <code>contrastlib report</code>.</p>"]
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(run.name)}: contrastlib run</title>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<style>{_CSS}</style></head><body><main>{''.join(parts)}</main>"
            # marks images the browser could not decode (checked by the headless test)
            "<script>addEventListener('load',()=>{document.body.dataset.brokenImages="
            "[...document.images].filter(i=>!i.naturalWidth).length})</script></body></html>")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report (``RUN_DIR/report.html`` by default) atomically."""
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    page = build_report(run_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def chromium() -> str | None:
    """A Chromium or Chrome executable on this machine, or None."""
    for name in (os.environ.get("CONTRASTLIB_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


def _headless(browser: str, profile: str) -> list[str]:
    # No network, no first-run or background work: a closed machine refuses them slowly.
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}"]


def screenshot(page: str | Path, png: str | Path, *, width: int = 1280, height: int = 1800,
               browser: str | None = None) -> Path:
    """Render ``page`` in headless Chromium and write a PNG of its top ``width x height``."""
    browser = browser or chromium()
    if browser is None:
        raise ConfigError("--screenshot: no Chromium found (install chromium, or set CONTRASTLIB_CHROMIUM)")
    png = Path(png)
    with tempfile.TemporaryDirectory() as profile, atomic_path(png) as tmp:
        shot = Path(profile) / "shot.png"  # Chromium picks the format by the suffix
        cmd = [*_headless(browser, profile), f"--screenshot={shot}", f"--window-size={width},{height}",
               Path(page).resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not shot.is_file() or not shot.stat().st_size:
            raise ConfigError(f"--screenshot: Chromium failed ({done.stderr.strip().splitlines()[-1:]})")
        shutil.copyfile(shot, tmp)
    return png


def rendered_dom(page: str | Path, *, browser: str | None = None) -> str:
    """The page's DOM after Chromium has loaded it (for tests)."""
    browser = browser or chromium()
    if browser is None:
        raise ConfigError("no Chromium found")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [*_headless(browser, profile), "--virtual-time-budget=5000", "--dump-dom", Path(page).resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
