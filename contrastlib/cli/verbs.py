"""The verbs of the command line: each module of this package registers its own with
:func:`verb` (name, help, its options, what it runs); :mod:`.main` builds the parser from
them. A new verb is one new module here."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verb:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    #: Sub-commands build their own parsers (``eval TASK``): no ``--json`` at this level.
    nested: bool = False


VERBS: dict[str, Verb] = {}


def verb(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None], *,
         nested: bool = False) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the decorated ``run(args) -> exit code`` as ``contrastlib NAME``."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in VERBS:
            raise ValueError(f"verb {name!r} is registered twice")
        VERBS[name] = Verb(name, help, arguments, run, nested)
        return run

    return decorate


def emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """Print the text report; with ``--json``, one JSON object as the last stdout line."""
    if text:
        print(text)
    if args.json:
        print(json.dumps(payload))


def add_devices_argument(p: argparse.ArgumentParser) -> None:
    """``--devices``: encode on several processes or devices (contrastlib/pool.py)."""
    p.add_argument("--devices", help="encode on several processes: a count (cuda:0..N-1 where there are that many "
                                     "GPUs, else N CPU processes) or a list (cpu,cpu / cuda:0,cuda:1); the output is "
                                     "the one-process output, and a restart keeps every finished shard")
