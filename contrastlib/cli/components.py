"""``contrastlib list``: shipped recipes and every registered component."""

from __future__ import annotations

import argparse

from contrastlib.cli.verbs import emit, verb


def arguments(p: argparse.ArgumentParser) -> None:
    pass


@verb("list", "list shipped recipes and registered encoders, poolings, losses, methods, samplers, heads, evaluations",
      arguments)
def run(args: argparse.Namespace) -> int:
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
    emit(args, payload, "\n".join(lines))
    return 0
