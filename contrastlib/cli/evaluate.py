"""``contrastlib eval TASK``: one sub-command per registered evaluation that has one
(:class:`~contrastlib.evaluation.base.Evaluation` ``cli_help``), with the options it declares."""

from __future__ import annotations

import argparse

from contrastlib.cli.verbs import emit, verb


def arguments(p: argparse.ArgumentParser) -> None:
    import contrastlib.components  # noqa: F401  (fills the registries)
    from contrastlib.registry import EVALUATIONS

    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    for entry in EVALUATIONS.entries():
        evaluation = entry.obj
        if evaluation.cli_help is None:
            continue
        t = tasks.add_parser(entry.name, help=evaluation.cli_help, description=evaluation.cli_help)
        evaluation.add_arguments(t)
        t.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
        t.set_defaults(evaluation=evaluation)


@verb("eval", "evaluate a model", arguments, nested=True)
def run(args: argparse.Namespace) -> int:
    payload, text = args.evaluation.run_cli(args)
    emit(args, payload, text)
    return 0
