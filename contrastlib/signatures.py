"""A registered component's parameters, read from its signature: the open config
sections (``model``, ``loss``, ``data.sampler_options``, ``method.head``) are checked
against the component they name, so adding a component adds its parameters and no shared
list grows."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from contrastlib.errors import ConfigError
from contrastlib.registry import Registry

#: Loss arguments a method supplies itself, never set from the config.
SUPPLIED = frozenset({"num_samples"})


class SectionKeyError(ConfigError):
    """A bad key in an open section; ``dotted`` names it (load.py adds the YAML line)."""

    def __init__(self, dotted: str, message: str) -> None:
        self.dotted = dotted
        super().__init__(message)


def signature_parameters(obj: Any, skip_first: bool, supplied: frozenset[str] = SUPPLIED) -> tuple[list[str], bool]:
    """(keyword parameter names, whether it takes **kwargs) of a class or function,
    leaving out the ``supplied`` ones."""
    fn = obj.__init__ if inspect.isclass(obj) else obj
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    if skip_first and params:
        params = params[1:]
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = [
        p.name for p in params
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL) and p.name not in supplied
    ]
    return names, open_kwargs


def unknown_key(section: str, key: str, kind: str, name: str, accepted: list[str]) -> SectionKeyError:
    hint = difflib.get_close_matches(key, accepted, n=1)
    msg = f"{section}.{key}: not a parameter of {kind} {name!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    return SectionKeyError(f"{section}.{key}", msg + f"; it takes: {', '.join(accepted) or '(nothing)'}")


def selected(section: str, values: Mapping[str, Any], selector: str, registry: Registry[Any]) -> tuple[str, Any]:
    name = values.get(selector)
    if not isinstance(name, str):
        raise SectionKeyError(f"{section}.{selector}", f"{section}.{selector}: missing; valid choices: {', '.join(registry.names())}")
    try:
        registry.check(name, key=f"{section}.{selector}")
    except ConfigError as exc:
        raise SectionKeyError(f"{section}.{selector}", str(exc)) from None
    return name, registry.get(name)


def signature_kwargs(
    section: str, values: Mapping[str, Any], *, selector: str, registry: Registry[Any], positional: str | None = None,
    supplied: frozenset[str] = SUPPLIED,
) -> tuple[Any, dict[str, Any], Any]:
    """``(component, keyword arguments, positional value)`` for an open section.

    ``positional`` names a section key passed as the component's first argument (the
    encoder's model ``name``); ``supplied``: arguments the caller supplies itself, never
    keys. Null values are left out (the component's default holds).
    """
    name, obj = selected(section, values, selector, registry)
    accepted, open_kwargs = signature_parameters(obj, skip_first=positional is not None, supplied=supplied)
    kwargs: dict[str, Any] = {}
    first = None
    for key, value in values.items():
        if key == selector:
            continue
        if key == positional:
            first = value
            continue
        if value is None:  # null: the component's default (or a key it does not take, unset)
            continue
        if key not in accepted and not open_kwargs:
            raise unknown_key(section, key, registry.kind, name, accepted + ([positional] if positional else []))
        kwargs[key] = value
    return obj, kwargs, first
