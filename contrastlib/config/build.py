"""Open config sections -> registered components, with explicit keyword arguments.

``model``, ``method`` and ``loss`` are open sections: a selector key names a registered
component (``model.encoder``, ``method.name``, ``loss.name``) and every other key must be
one of *that* component's own parameters, read from its signature (losses, encoders) or
its ``Config`` dataclass (methods). Adding a component adds its parameters; no shared
list grows.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, cast

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from contrastlib.encoders.base import Encoder
from contrastlib.errors import ConfigError
from contrastlib.losses.base import ContrastiveLoss
from contrastlib.losses.matryoshka import MatryoshkaLoss, check_matryoshka
from contrastlib.registry import ENCODERS, LOSSES, METHODS
from contrastlib.signatures import (
    SectionKeyError,
    selected,
    signature_kwargs,
    signature_parameters,
    unknown_key,
)


# ---------------------------------------------------------------------------- losses
def loss_parameters(name: str) -> list[str]:
    """The config keys loss ``name`` accepts."""
    return signature_parameters(LOSSES.get(name), skip_first=False)[0]


def loss_spec(values: Mapping[str, Any]) -> tuple[type[ContrastiveLoss], dict[str, Any]]:
    """The loss class and its keyword arguments; ``matryoshka`` (a wrapper's settings,
    :func:`matryoshka_spec`) is checked here and left out."""
    matryoshka_spec(values)
    inner = {k: v for k, v in values.items() if k != "matryoshka"}
    cls, kwargs, _ = signature_kwargs("loss", inner, selector="name", registry=LOSSES)
    return cls, kwargs


def matryoshka_spec(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """``loss.matryoshka`` as ``{"dims": (...), "weights": (...)}`` (largest first), or None."""
    spec = values.get("matryoshka")
    if spec is None:
        return None
    spec = OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else spec
    if not isinstance(spec, Mapping) or set(spec) - {"dims", "weights"} or "dims" not in spec:
        raise ConfigError("loss.matryoshka: a mapping {dims: [...], weights: [...]} (weights optional), "
                          f"got {spec!r}")
    try:
        dims, weights = check_matryoshka(spec["dims"], spec.get("weights"))
    except ValueError as exc:
        raise ConfigError(f"loss.matryoshka.{exc}") from None
    return {"dims": list(dims), "weights": list(weights)}


def build_loss(values: Mapping[str, Any], *, num_samples: int) -> ContrastiveLoss:
    loss = _build_inner_loss(values, num_samples=num_samples)
    spec = matryoshka_spec(values)
    if spec is None:
        return loss
    try:
        return MatryoshkaLoss(loss, spec["dims"], spec["weights"])
    except ValueError as exc:
        raise ConfigError(f"loss.matryoshka: {exc}") from None


def _build_inner_loss(values: Mapping[str, Any], *, num_samples: int) -> ContrastiveLoss:
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
    name, cls = selected("method", values, "name", METHODS)
    schema = cls.Config
    accepted = [f.name for f in dataclasses.fields(schema)]
    rest = {k: v for k, v in values.items() if k != "name"}
    for key in rest:
        if key not in accepted:
            raise unknown_key("method", key, "method", name, accepted)
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
