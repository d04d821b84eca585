"""The contract every registered encoder implements, text and image alike.

A method trains an encoder of its own ``inputs`` (``"strings"`` or ``"images"``), and an
evaluation or sampler that needs embeddings calls :meth:`Encoder.encode` with the same
signature whatever the encoder: items in, ``[N, dim]`` float32 out, in input order.
Checkpoints store :meth:`Encoder.spec_dict` (plain data: the constructor's arguments, and
``kind``, the registered name), and :func:`contrastlib.loading.load_encoder` rebuilds the
encoder from it, from a saved directory (:meth:`Encoder.save` / :meth:`Encoder.load`), or
from a model spec string an encoder class :meth:`Encoder.claims`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from contrastlib.utils.io import atomic_dir

#: What :meth:`Encoder.save` writes besides the weights (the default layout).
SPEC_FILE, WEIGHTS_FILE = "encoder.json", "encoder.safetensors"


class Encoder(nn.Module):
    """Base class of registered encoders (``model.encoder``)."""

    #: What ``encode`` and ``forward`` take: ``"strings"`` or ``"images"``.
    inputs: ClassVar[str]
    #: The registered name (``model.encoder``), set by the subclass.
    kind: ClassVar[str]
    #: Width of the embeddings ``forward`` returns.
    dim: int
    #: Prefix sizes the encoder was trained to embed at (a Matryoshka loss), largest first:
    #: evaluations report each, exports record them. Empty: only ``dim``.
    matryoshka_dims: tuple[int, ...] = ()
    #: Named prompts (sentence-transformers' ``prompts``: ``query``, ``document``) the encoder
    #: was trained with; text encoders save them in their export.
    prompts: Mapping[str, str] = MappingProxyType({})
    #: The prompt name sentence-transformers applies when none is given (our exports: none).
    default_prompt_name: str | None = None
    #: Builds any model spec no other encoder claims (one per installation: text's).
    catch_all: ClassVar[bool] = False

    @property
    def max_seq_length(self) -> int | None:
        """Tokens per text (text encoders); None: no window."""
        return None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(
        self, items: Sequence[Any], /, *, batch_size: int = 128, precision: str = "fp32",
        show_progress_bar: bool | None = None, convert_to_numpy: bool = True,
    ) -> np.ndarray | Tensor:
        """``[N, dim]`` float32 embeddings of ``items`` in eval mode (the module's mode is
        given back), under ``precision`` (``fp32``, ``bf16``, ``fp16`` autocast)."""
        raise NotImplementedError

    def spec_dict(self) -> dict[str, Any]:
        """Plain data that rebuilds the architecture: ``type(self)(**spec)``."""
        raise NotImplementedError

    def weights_fingerprint(self) -> str:
        """A hash of the weights and the spec: equal for the same model, whatever its
        device or mode (the embedding cache's key)."""
        import hashlib

        h = hashlib.blake2b(digest_size=20)
        h.update(json.dumps(self.spec_dict(), sort_keys=True, default=str).encode())
        state = self.state_dict()
        for name in sorted(state):
            tensor = state[name]
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def save(self, out_dir: str | Path) -> Path:
        """The weights (safetensors) and the spec in ``out_dir``, written atomically."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
            extras = {**self.saved_extras(), **({"matryoshka_dims": list(self.matryoshka_dims)} if self.matryoshka_dims else {})}
            saved = {"kind": self.kind, "spec": self.spec_dict(), "extras": extras}
            (tmp / SPEC_FILE).write_text(json.dumps(saved, indent=2))
        return out

    def saved_extras(self) -> dict[str, Any]:
        """More plain data for :meth:`save` to keep (read back by :meth:`restore_extras`)."""
        return {}

    def restore_extras(self, saved: dict[str, Any]) -> None:
        """Take back what :meth:`saved_extras` wrote."""

    @classmethod
    def is_saved(cls, path: Path) -> bool:
        """Whether ``path`` is a directory :meth:`load` reads."""
        return (path / SPEC_FILE).is_file() and (path / WEIGHTS_FILE).is_file()

    @classmethod
    def load(cls, path: str | Path) -> Encoder:
        """An encoder written by :meth:`save`."""
        from safetensors.torch import load_file

        root = Path(path)
        saved = json.loads((root / SPEC_FILE).read_text())
        encoder = cls(**saved["spec"])
        encoder.load_state_dict(load_file(str(root / WEIGHTS_FILE)), strict=True)
        encoder.restore_extras(saved.get("extras") or {})
        encoder.matryoshka_dims = tuple((saved.get("extras") or {}).get("matryoshka_dims", ()))
        return encoder

    @classmethod
    def check_arguments(cls, name: str, **kwargs: Any) -> None:
        """Cheap checks of ``model.*`` values, before any model is built: raise
        ``ValueError("model.KEY: ...")``."""

    @classmethod
    def claims(cls, spec: str) -> bool:
        """Whether a model spec on the command line (not a run or saved directory) names a
        model of this kind, e.g. ``timm:resnet18``. The first registered encoder that
        claims a spec builds it."""
        return False

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> Encoder:
        """The encoder a claimed spec names."""
        raise NotImplementedError
