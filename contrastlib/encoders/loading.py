"""Turn a model spec into a TextEncoder.

A spec may be a Hugging Face id, a local model dir, a sentence-transformers dir, a
contrastlib run dir, or a contrastlib checkpoint (``.ckpt``). Checkpoints are read with
``torch.load(weights_only=True)``: no pickled code is ever executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from contrastlib.encoders.text import TextEncoder
from contrastlib.errors import ModelLoadError

RUN_MARKER = "contrastlib_run.json"
#: Key under which methods store the encoder spec in their checkpoint hyper-parameters.
ENCODER_HPARAM = "encoder"
ENCODER_PREFIX = "encoder."


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / RUN_MARKER).is_file()


def load_encoder_from_checkpoint(path: str | Path) -> TextEncoder:
    path = Path(path)
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable checkpoint ({exc})") from None
    spec = (ckpt.get("hyper_parameters") or {}).get(ENCODER_HPARAM)
    if not isinstance(spec, dict):
        raise ModelLoadError(f"{path}: no text-encoder spec in the checkpoint's hyper-parameters")
    encoder = TextEncoder(**spec)
    state = {
        k[len(ENCODER_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(ENCODER_PREFIX)
    }
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    # Some buffers (e.g. position_ids) are not persisted by every transformers version.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelLoadError(f"{path}: encoder weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return encoder


def load_encoder(spec: str | Path, **overrides: Any) -> TextEncoder:
    """Load a TextEncoder from any supported spec (see module docstring)."""
    path = Path(spec)
    if path.is_file():
        if path.suffix == ".ckpt":
            return load_encoder_from_checkpoint(path)
        raise ModelLoadError(f"{path}: a file that is not a .ckpt checkpoint")
    if is_run_dir(path):
        if (path / "model" / "modules.json").is_file():
            return TextEncoder(str(path / "model"), **overrides)
        last = path / "checkpoints" / "last.ckpt"
        if last.is_file():
            return load_encoder_from_checkpoint(last)
        raise ModelLoadError(f"{path}: run dir with neither model/ nor checkpoints/last.ckpt")
    return TextEncoder(str(spec), **overrides)
