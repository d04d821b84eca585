"""``contrastlib`` command line.

Every verb is a module of this package that registers itself (:mod:`.verbs`). User
errors (bad data, bad config, unknown model) print one line ``error: ...`` on stderr and
exit with code 2. With ``--json`` the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from contrastlib import __version__
from contrastlib.errors import ContrastlibError, one_line

EXIT_USAGE = 2
#: The job failed for a reason outside the input (a full disk, a file-size limit).
EXIT_FAILURE = 1


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every verb. Given ``argv``, only the verb it names gets its options
    (the others' may import a lot, e.g. every registered evaluation for ``eval``)."""
    from contrastlib import cli
    from contrastlib.cli.verbs import VERBS

    for info in pkgutil.iter_modules(cli.__path__, prefix=f"{cli.__name__}."):
        importlib.import_module(info.name)
    named = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    parser = argparse.ArgumentParser(prog="contrastlib", description="Contrastive representation learning on PyTorch Lightning.")
    parser.add_argument("--version", action="version", version=f"contrastlib {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for v in sorted(VERBS.values(), key=lambda v: v.name):
        p = sub.add_parser(v.name, help=v.help, description=v.help)
        if named is not None and v.name != named:
            continue
        if not v.nested:
            p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
        v.arguments(p)
        p.set_defaults(func=v.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from contrastlib.utils.quiet import quiet_third_party

    quiet_third_party()
    args = build_parser(list(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    try:
        return int(args.func(args))
    except ContrastlibError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # A full disk, a file-size limit, a permission or a vanished mount: not a bug in
        # the input, and every output was written under a temporary name, so the
        # previous one stands. One line, exit 1.
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
