"""Open config sections -> registered components, with explicit keyword arguments.

``model``, ``method`` and ``loss`` are open sections: a selector key names a registered
component (``model.encoder``, ``method.name``, ``loss.name``) and every other key must be
one of *that* component's own parameters, read from its signature (losses, encoders) or
its ``Config`` dataclass (methods). Adding a component adds its parameters; no shared
list grows.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Mapping
from typing import Any, cast

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from contrastlib.encoders.base import Encoder
from contrastlib.errors import ConfigError
from contrastlib.losses.base import ContrastiveLoss
from contrastlib.registry import ENCODERS, LOSSES, METHODS, SAMPLERS, Registry

#: Loss arguments a method supplies itself, never set from the config.
SUPPLIED = frozenset({"num_samples"})


class SectionKeyError(ConfigError):
    """A bad key in an open section; ``dotted`` names it (load.py adds the YAML line)."""

    def __init__(self, dotted: str, message: str) -> None:
        self.dotted = dotted
        super().__init__(message)


def _signature_parameters(obj: Any, skip_first: bool, supplied: frozenset[str] = SUPPLIED) -> tuple[list[str], bool]:
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


def _unknown(section: str, key: str, kind: str, name: str, accepted: list[str]) -> SectionKeyError:
    hint = difflib.get_close_matches(key, accepted, n=1)
    msg = f"{section}.{key}: not a parameter of {kind} {name!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    return SectionKeyError(f"{section}.{key}", msg + f"; it takes: {', '.join(accepted) or '(nothing)'}")


def _selected(section: str, values: Mapping[str, Any], selector: str, registry: Registry[Any]) -> tuple[str, Any]:
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
    name, obj = _selected(section, values, selector, registry)
    accepted, open_kwargs = _signature_parameters(obj, skip_first=positional is not None, supplied=supplied)
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
            raise _unknown(section, key, registry.kind, name, accepted + ([positional] if positional else []))
        kwargs[key] = value
    return obj, kwargs, first


# ---------------------------------------------------------------------------- losses
def loss_parameters(name: str) -> list[str]:
    """The config keys loss ``name`` accepts."""
    return _signature_parameters(LOSSES.get(name), skip_first=False)[0]


def loss_spec(values: Mapping[str, Any]) -> tuple[type[ContrastiveLoss], dict[str, Any]]:
    cls, kwargs, _ = signature_kwargs("loss", values, selector="name", registry=LOSSES)
    return cls, kwargs


def build_loss(values: Mapping[str, Any], *, num_samples: int) -> ContrastiveLoss:
    cls, kwargs = loss_spec(values)
    if "num_samples" in inspect.signature(cls.__init__).parameters:
        kwargs["num_samples"] = num_samples
    try:
        loss: ContrastiveLoss = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"loss {values['name']!r}: {exc}") from None
    return loss


# ---------------------------------------------------------------------------- encoders
def encoder_spec(values: Mapping[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """(encoder class, model name, keyword arguments) from the ``model`` section."""
    cls, kwargs, name = signature_kwargs("model", values, selector="encoder", registry=ENCODERS, positional="name")
    if not isinstance(name, str) or not name:
        raise SectionKeyError("model.name", "model.name: missing (a Hugging Face id or dir for text, a timm name for images)")
    try:
        cls.check_arguments(name, **kwargs)
    except (ValueError, KeyError) as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        raise SectionKeyError(message.split(":", 1)[0], message) from None
    return cls, name, kwargs


def build_encoder(values: Mapping[str, Any]) -> Encoder:
    cls, name, kwargs = encoder_spec(values)
    try:
        encoder: Encoder = cls(name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    return encoder


# ---------------------------------------------------------------------------- methods
def method_config(values: Mapping[str, Any]) -> tuple[Any, Any]:
    """(method class, its typed ``Config`` instance) from the ``method`` section."""
    name, cls = _selected("method", values, "name", METHODS)
    schema = cls.Config
    accepted = [f.name for f in dataclasses.fields(schema)]
    rest = {k: v for k, v in values.items() if k != "name"}
    for key in rest:
        if key not in accepted:
            raise _unknown("method", key, "method", name, accepted)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(rest))
        return cls, OmegaConf.to_object(typed)
    except OmegaConfBaseException as exc:
        key = str(exc.full_key or "")
        first = str(exc).splitlines()[0]
        raise SectionKeyError(f"method.{key}", f"method.{key}: {first}" if key else f"method: {first}") from None


def section_dict(values: Any) -> dict[str, Any]:
    """A plain dict of an open section (DictConfig or dict)."""
    if OmegaConf.is_config(values):
        return cast(dict[str, Any], OmegaConf.to_container(values, resolve=True))
    return dict(values)


#: Sampler arguments the pipeline supplies, never ``data.sampler_options``.
SAMPLER_SUPPLIED = frozenset({"rows", "batch_size", "drop_last", "seed", "num_replicas", "rank"})


def sampler_data(cls: Any, data: Any) -> dict[str, Any]:
    """What ``data`` gives the sampler class ``cls`` of the row data it ``needs`` or ``takes``
    (``embeddings`` as None: the pipeline computes them once the encoder exists)."""
    given = data.sampler_inputs()
    return {k: v for k, v in given.items() if k in cls.needs | cls.takes}


def check_sampler(name: str, options: Mapping[str, Any], data: Any, batch_size: int) -> dict[str, Any]:
    """``data.sampler_options`` checked against sampler ``name``'s own parameters, and its
    ``needs`` against what the method's data gives; a sampler that needs no embeddings is
    built once on the data, so its errors come before a model loads."""
    cls = SAMPLERS.get(name)
    missing = cls.needs - set(data.sampler_inputs())
    if missing:
        raise ConfigError(
            f"data.sampler: sampler {name!r} needs {', '.join(sorted(missing))} of each row, "
            f"and {data.source} ({data.description}) has none"
        )
    params, _ = _signature_parameters(cls, skip_first=False)
    accepted = [p for p in params if p not in SAMPLER_SUPPLIED | cls.needs | cls.takes]
    kwargs = {k: v for k, v in options.items() if v is not None}  # null: the sampler's default
    for key in kwargs:
        if key not in accepted:
            raise _unknown("data.sampler_options", key, "sampler", name, accepted)
    try:
        if "embeddings" in cls.needs:
            cls.check_options(batch_size, **kwargs)
        else:
            cls(data.sampler_rows(), batch_size, seed=0, **sampler_data(cls, data), **kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        key = message.split(":", 1)[0]
        raise ConfigError(
            f"data.sampler_options.{message}" if key in accepted else f"data.sampler {name!r}: {message}"
        ) from None
    return kwargs
