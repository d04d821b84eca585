"""What every evaluation is: a registered class built from one ``eval.<name>`` entry.

A config's ``eval`` section holds settings (``batch_size``, ``precision``,
``every_n_epochs``) and, under any other key, a list of entries for the registered
evaluation of that name (``contrastlib list``). An evaluation declares:

* ``takes``: what it evaluates: an encoder of ``"strings"`` or of ``"images"`` (an
  encoder's ``inputs``), or what a method declares as ``evaluates_as`` (a reward method's
  ``"reward_model"``). Before any model loads, every entry is checked against the
  method's target and its data read, so a bad file or a mismatch is a one-line error;
* ``main_metric``: the metric the run's table shows.

A new evaluation is one file: a subclass registered with ``@EVALUATIONS.register(NAME)``.
It receives the model through :meth:`Evaluation.__call__`, never a Lightning module. One
that sets ``cli_help`` is also ``contrastlib eval NAME`` (:meth:`add_arguments`,
:meth:`run_cli`; the command line adds ``--json``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar


class Evaluation:
    """Base class of registered evaluations (one instance per ``eval.<name>`` entry)."""

    takes: ClassVar[str]
    main_metric: ClassVar[str]
    #: Whether ``eval.devices`` applies: the evaluation can encode on other processes
    #: (:attr:`devices`, set by the run's plan).
    uses_devices: ClassVar[bool] = False
    devices: tuple[str, ...] = ()
    #: The row name in the run's table and in ``metrics.json`` (set per instance).
    name: str
    #: ``contrastlib eval NAME``'s help line; None: no command of its own.
    cli_help: ClassVar[str | None] = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The options of ``contrastlib eval NAME``."""

    @classmethod
    def run_cli(cls, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
        """Run ``contrastlib eval NAME``: ``(JSON payload, text report)``. Read and check
        the data before the model loads."""
        raise NotImplementedError

    @classmethod
    def from_entry(cls, entry: Any, *, batch_size: int, precision: str) -> Evaluation:
        """Read the entry's data now (bad data fails before any work); ``entry`` is what
        the config lists (a path, or a mapping of options)."""
        raise NotImplementedError

    def __call__(self, model: Any, cache: dict[Any, Any] | None = None) -> dict[str, float]:
        """Metrics of ``model``. ``cache``: one dict per evaluation round, shared by the
        run's evaluations (e.g. to embed a set once)."""
        raise NotImplementedError

    def after_fit(self, run_dir: Path, *, projection: str, points: int, seed: int, log: Callable[[str], None],
                  done: set[str]) -> None:
        """After the final evaluation of a run (rank 0): plots and files of its own, e.g.
        a 2-D ``projection`` (``tsne``, ``none``) of at most ``points`` embeddings.
        ``done``: keys already handled by another evaluation of the run."""


def run_evaluations(evaluations: list[Evaluation], model: Any) -> dict[str, dict[str, float]]:
    """``{name: metrics}`` of every evaluation on ``model`` (one round, one shared cache)."""
    cache: dict[Any, Any] = {}
    return {e.name: e(model, cache) for e in evaluations}
