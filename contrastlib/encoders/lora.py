"""LoRA adapters on a text encoder's transformer, through ``peft`` (Hu et al. 2021,
"LoRA: Low-Rank Adaptation of Large Language Models").

``model.lora: {rank: 8, alpha: 8, dropout: 0.0, target_modules: [query, value], export: merged}``:
the transformer's weights are frozen and low-rank adapters on ``target_modules`` (null:
``peft``'s choice for the architecture; BERT's ``query`` and ``value``) are trained; every
other trainable part of a run (a reward head, a learnable temperature) trains as before.
The defaults are ``peft``'s own ``LoraConfig`` defaults.

Export: ``merged`` (default) folds the adapters into the weights and writes a plain
sentence-transformers directory; ``adapter`` writes the adapter alone
(``adapter_config.json``, ``adapter_model.safetensors``, naming its base model), which
sentence-transformers and ``transformers`` load on top of the base model when ``peft`` is
installed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

LORA_KEYS = ("rank", "alpha", "dropout", "target_modules", "export")
EXPORTS = ("merged", "adapter")


def lora_settings(values: Any) -> dict[str, Any]:
    """``model.lora`` checked, with ``peft``'s defaults filled in; ``ValueError("model.lora.KEY: ...")``."""
    if not isinstance(values, Mapping):
        raise ValueError(f"model.lora: a mapping with {', '.join(LORA_KEYS)}, got {values!r}")
    unknown = sorted(set(values) - set(LORA_KEYS))
    if unknown:
        raise ValueError(f"model.lora.{unknown[0]}: not a LoRA setting; they are {', '.join(LORA_KEYS)}")
    out = {"rank": 8, "alpha": 8, "dropout": 0.0, "target_modules": None, "export": "merged", **values}
    for key in ("rank", "alpha"):
        if isinstance(out[key], bool) or not isinstance(out[key], (int, float)) or not out[key] > 0:
            raise ValueError(f"model.lora.{key}: a number > 0, got {out[key]!r}")
    if not isinstance(out["rank"], int):
        raise ValueError(f"model.lora.rank: an integer, got {out['rank']!r}")
    if isinstance(out["dropout"], bool) or not isinstance(out["dropout"], (int, float)) or not 0 <= out["dropout"] < 1:
        raise ValueError(f"model.lora.dropout: in [0, 1), got {out['dropout']!r}")
    targets = out["target_modules"]
    if targets is not None:
        if isinstance(targets, str):
            targets = [targets]
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"model.lora.target_modules: module names, e.g. [query, value]; got {out['target_modules']!r}")
        out["target_modules"] = list(targets)
    if out["export"] not in EXPORTS:
        raise ValueError(f"model.lora.export: one of {', '.join(EXPORTS)}, got {out['export']!r}")
    return out


def require_peft() -> None:
    """``ValueError("model.lora: ...")`` where ``peft`` is not installed (checked before any model loads)."""
    _peft()


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ValueError("model.lora: needs the peft package (pip install 'contrastlib[lora]')") from None
    return peft


def add_lora(model: nn.Module, settings: Mapping[str, Any]) -> nn.Module:
    """``model`` with LoRA adapters (its own weights frozen): a ``peft.PeftModel``."""
    peft = _peft()
    config = peft.LoraConfig(r=settings["rank"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                             target_modules=settings["target_modules"], bias="none")
    try:
        wrapped: nn.Module = peft.get_peft_model(model, config)
    except ValueError as exc:  # target modules not found in the model
        raise ValueError(f"model.lora.target_modules: {str(exc).splitlines()[0]}") from None
    return wrapped


def merged(model: nn.Module) -> nn.Module:
    """A copy of a ``PeftModel`` with its adapters folded into the weights (the model itself
    keeps training as it is)."""
    plain: nn.Module = copy.deepcopy(model).merge_and_unload()  # type: ignore[operator]
    return plain


def saved_adapter(path: Path) -> tuple[str, dict[str, Any]] | None:
    """``(base model, settings)`` of a LoRA adapter saved alone in ``path``, else None."""
    config = path / "adapter_config.json"
    if not config.is_file():
        return None
    c = json.loads(config.read_text())
    targets = c.get("target_modules")
    settings = {"rank": c.get("r", 8), "alpha": c.get("lora_alpha", 8), "dropout": c.get("lora_dropout", 0.0),
                "target_modules": sorted(targets) if isinstance(targets, (list, set)) else targets, "export": "adapter"}
    return str(c["base_model_name_or_path"]), lora_settings(settings)


def load_adapter(model: nn.Module, path: Path) -> nn.Module:
    """``model`` (the adapter's base) with the adapter saved in ``path``, trainable."""
    loaded: nn.Module = _peft().PeftModel.from_pretrained(model, str(path), is_trainable=True)
    return loaded
