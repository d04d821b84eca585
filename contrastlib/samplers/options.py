"""A sampler's options and row data, checked against what it declares (``needs``,
``takes``) and its signature before any model loads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contrastlib.errors import ConfigError
from contrastlib.registry import SAMPLERS
from contrastlib.signatures import signature_parameters, unknown_key

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
    params, _ = signature_parameters(cls, skip_first=False)
    accepted = [p for p in params if p not in SAMPLER_SUPPLIED | cls.needs | cls.takes]
    kwargs = {k: v for k, v in options.items() if v is not None}  # null: the sampler's default
    for key in kwargs:
        if key not in accepted:
            raise unknown_key("data.sampler_options", key, "sampler", name, accepted)
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
