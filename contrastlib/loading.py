"""Models named on the command line or left by a run, loaded by what they declare.

:func:`load_encoder` takes a Hugging Face id, a local model directory, a saved encoder
directory, a contrastlib run directory or a ``.ckpt`` checkpoint, and builds the
registered encoder that wrote it: a saved directory names its ``kind``
(:mod:`contrastlib.encoders.base`), a checkpoint stores the encoder's spec in its
hyper-parameters (:mod:`contrastlib.checkpoints`), and a spec string goes to the encoder
that :meth:`~contrastlib.encoders.base.Encoder.claims` it (``timm:NAME``), else to the
catch-all one (Hugging Face ids and directories). Checkpoints are read with
``torch.load(weights_only=True)``: no pickled code runs.

:class:`LazyEncoder` loads the model only when something needs it: a warm ``mine`` or
``eval retrieval`` whose embeddings are all cached never loads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import contrastlib.encoders
from contrastlib.checkpoints import (
    ENCODER_EXTRAS_HPARAM,
    ENCODER_HPARAM,
    ENCODER_PREFIX,
    FROZEN_ENCODER_KEY,
)
from contrastlib.encoders.base import SPEC_FILE, Encoder
from contrastlib.encoders.offline import resolve_model_path
from contrastlib.errors import ModelLoadError
from contrastlib.jobs import is_run_dir
from contrastlib.registry import ENCODERS
from contrastlib.utils.rooms import register_room

register_room(contrastlib.encoders)  # every registered encoder can be loaded

#: A run directory's exported model.
MODEL_DIR = "model"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def _catch_all() -> type[Encoder]:
    return next(e.obj for e in ENCODERS.entries() if e.obj.catch_all)


def _saved_kind(path: Path) -> type[Encoder]:
    """The encoder class that wrote the directory ``path``."""
    spec_file = path / SPEC_FILE
    if spec_file.is_file():
        try:
            return ENCODERS.get(json.loads(spec_file.read_text())["kind"])
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{spec_file}: not a saved encoder ({exc})") from None
    return _catch_all()


def load_encoder_from_checkpoint(path: str | Path) -> Encoder:
    path = Path(path)
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable checkpoint ({exc})") from None
    if FROZEN_ENCODER_KEY in ckpt:
        raise ModelLoadError(
            f"{path}: this run's checkpoint keeps its frozen encoder's fingerprint, not its weights; load the run's model/"
        )
    hparams = ckpt.get("hyper_parameters") or {}
    spec = dict(hparams.get(ENCODER_HPARAM) or {})
    if not spec:
        raise ModelLoadError(f"{path}: no encoder spec in the checkpoint's hyper-parameters")
    cls = ENCODERS.get(spec.pop("kind")) if "kind" in spec else _catch_all()
    encoder: Encoder = cls(**spec)
    state = {k[len(ENCODER_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(ENCODER_PREFIX)}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    # Some buffers (e.g. position_ids) are not persisted by every transformers version.
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelLoadError(f"{path}: encoder weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
    extras = hparams.get(ENCODER_EXTRAS_HPARAM)
    if extras is not None:  # the prompts and sizes it trained with, not its base model's
        encoder.prompts = {str(k): str(v) for k, v in (extras.get("prompts") or {}).items()}
        encoder.default_prompt_name = None
        encoder.matryoshka_dims = tuple(int(d) for d in extras.get("matryoshka_dims") or ())
    return encoder


def model_files(spec: str | Path) -> Path | None:
    """The local file or directory :func:`load_encoder` reads ``spec`` from, or None
    when it is not on disk (a hub id, a ``timm:NAME``)."""
    path = Path(resolve_model_path(str(spec)))
    if path.is_file():
        return path
    if is_run_dir(path):
        if (path / MODEL_DIR).is_dir():
            return path / MODEL_DIR
        last = path / LAST_CHECKPOINT
        return last if last.is_file() else None
    return path if path.is_dir() else None


def load_encoder(spec: str | Path, **overrides: Any) -> Encoder:
    """The encoder ``spec`` names (see the module docstring); ``overrides`` are constructor
    arguments for a model built from a spec string or a model directory."""
    source = model_files(spec)
    if source is not None and source.is_file():
        if source.suffix == ".ckpt":
            return load_encoder_from_checkpoint(source)
        raise ModelLoadError(f"{source}: a file that is not a .ckpt checkpoint")
    if is_run_dir(Path(spec)) and source is None:
        raise ModelLoadError(f"{spec}: run dir with neither {MODEL_DIR}/ nor {LAST_CHECKPOINT}")
    if source is not None:
        cls = _saved_kind(source)
        return cls.load(source) if not overrides or not cls.catch_all else cls.from_spec(str(source), **overrides)
    text = str(spec)
    claimed = [e.obj for e in ENCODERS.entries() if e.obj.claims(text)]
    return (claimed[0] if claimed else _catch_all()).from_spec(text, **overrides)


class LazyEncoder:
    """A model named on the command line, loaded only when something needs it.

    Its :meth:`weights_fingerprint` hashes the bytes of the files the model is loaded
    from, so a job whose embeddings are all in the cache runs without loading the model.
    """

    def __init__(self, spec: str | Path, **overrides: Any) -> None:
        self.spec = spec
        self.overrides = overrides
        self._encoder: Encoder | None = None

    def load(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder(self.spec, **self.overrides)
        return self._encoder

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def dim(self) -> int:
        return int(self.load().dim)

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        """The prefix sizes the model was trained at, read from a saved directory without
        loading it (a checkpoint or hub id: loaded)."""
        source = model_files(self.spec)
        if source is not None and source.is_dir():
            from contrastlib.encoders.sbert_format import read_st_config

            return read_st_config(source)[0]
        if source is not None and source.suffix == ".ckpt":
            ckpt = torch.load(source, map_location="cpu", weights_only=True)
            extras = (ckpt.get("hyper_parameters") or {}).get(ENCODER_EXTRAS_HPARAM) or {}
            return tuple(int(d) for d in extras.get("matryoshka_dims") or ())
        return ()  # a hub model: the sizes are a contrastlib export's own key

    def encode(self, items: Sequence[Any], **kwargs: Any) -> Any:
        return self.load().encode(items, **kwargs)

    def weights_fingerprint(self) -> str:
        """A hash of the model's files and the overrides; without local files (a hub
        id), of the loaded model's weights."""
        root = model_files(self.spec)
        if root is None:
            return self.load().weights_fingerprint()
        h = hashlib.sha256(b"contrastlib-model-files-v1")
        h.update(json.dumps(self.overrides, sort_keys=True, default=str).encode())
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            h.update(str(f.relative_to(root) if f != root else f.name).encode() + b"\0")
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
        return "files-" + h.hexdigest()[:40]
