"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from pathlib import Path


def one_line(text: str) -> str:
    """``text`` with every character that could break or hide a line (newlines, vertical
    tabs, NULs, other control and separator characters) written as its escape: a message
    quoting a malformed file's bytes stays one readable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ContrastlibError(Exception):
    """Base class for errors caused by the user's input, not by a bug. Its message is
    always one line (:func:`one_line`)."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class DataError(ContrastlibError, ValueError):
    """Malformed data file: carries the file and (where known) the 1-based line number."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(one_line(f"{where}: {message}"))


class ConfigError(ContrastlibError, ValueError):
    """Invalid configuration: unknown key, wrong type, missing value, unknown component."""


class UnknownComponentError(ConfigError, KeyError):
    def __init__(
        self, kind: str, name: str, choices: list[str], *, key: str | None = None
    ) -> None:
        self.kind, self.name, self.choices, self.key = kind, name, choices, key
        hint = difflib.get_close_matches(name, choices, n=1)
        where = f"{key}: " if key else ""
        msg = f"{where}unknown {kind} {name!r}; valid choices: {', '.join(choices) or '(none)'}"
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return one_line(str(self.args[0]))


class ModelLoadError(ContrastlibError):
    """A model spec that is neither a known id, a model dir, a run dir nor a checkpoint."""
