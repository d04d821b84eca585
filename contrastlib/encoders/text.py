"""TextEncoder: a Hugging Face transformer, masked pooling and optional normalisation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrastlib.encoders.base import Encoder
from contrastlib.encoders.lora import (
    add_lora,
    load_adapter,
    lora_settings,
    merged,
    require_peft,
    saved_adapter,
)
from contrastlib.encoders.offline import resolve_model_path
from contrastlib.encoders.pooling import pool
from contrastlib.encoders.sbert_format import (
    is_sbert_dir,
    read_sbert_dir,
    read_st_config,
    write_sbert_files,
)
from contrastlib.encoders.tokenize import tokenize_texts
from contrastlib.errors import ModelLoadError
from contrastlib.registry import ENCODERS, POOLINGS
from contrastlib.utils.io import atomic_dir
from contrastlib.utils.marks import split_prompts, strip_pool_mark
from contrastlib.utils.precision import autocast_context
from contrastlib.utils.shapes import padded_width, row_chunks


@dataclass(frozen=True)
class TextEncoderSpec:
    """Everything needed to rebuild a TextEncoder's architecture (stored in checkpoints)."""

    model: str
    pooling: str
    normalize: bool
    max_seq_length: int
    trust_remote_code: bool = False
    dropout: float | None = None
    #: LoRA settings (encoders/lora.py), or None: every weight trains.
    lora: dict[str, Any] | None = None
    #: Pool a prompt's tokens with the text's (sentence-transformers' Pooling default).
    include_prompt: bool = True


#: Config attributes that hold dropout probabilities, across Hugging Face architectures.
DROPOUT_ATTRIBUTES = (
    "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
    "hidden_dropout", "activation_dropout", "dropout_rate",
)

#: Tokens per forward pass in :meth:`TextEncoder.encode` on CPU (16 texts of 256 tokens).
#: A batch's activations are allocated anew at every width and glibc keeps the freed ones,
#: so the peak follows the largest forward: 64 full-window texts peaked ~250 MB above 16,
#: at the same speed (``docs/benchmarks.md``, "Where the bf16 peak goes").
CPU_TOKEN_BUDGET = 4096


@ENCODERS.register("text", summary="Hugging Face transformer + masked pooling (+ L2 normalisation)")
class TextEncoder(Encoder):
    """Sentence encoder over any Hugging Face model.

    Args:
        model: a Hugging Face id, a local model dir or a sentence-transformers dir
            (its pooling, normalisation and max length become the defaults).
        pooling: ``mean``, ``cls``, ``last`` or ``max`` (see ``contrastlib list``).
        normalize: L2-normalise the output embeddings.
        max_seq_length: tokens kept per text (longer texts are truncated).
        trust_remote_code: allow model code from the model dir; off unless asked for.
        dropout: set every dropout probability of the model (null: the model's own; 0
            makes training deterministic; unsupervised SimCSE needs it above 0).
        lora: train LoRA adapters instead of the weights: ``{rank, alpha, dropout,
            target_modules, export}`` (:mod:`contrastlib.encoders.lora`; needs ``peft``).
        include_prompt: pool a prompt's tokens with the text's (null: a
            sentence-transformers dir's own setting, else true, its default); false pools the
            text's alone, as sentence-transformers' ``Pooling(include_prompt=False)``.
    """

    inputs = "strings"
    kind = "text"
    #: Any Hugging Face id or local directory is a text model (the loader's fallback).
    catch_all = True

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_seq_length: int | None = None,
        trust_remote_code: bool = False,
        dropout: float | None = None,
        lora: Mapping[str, Any] | None = None,
        include_prompt: bool | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if dropout is not None and not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        #: sentence-transformers' named prompts (``query``, ``document``...) and the one used
        #: when none is named; read from and written to its config.
        self.prompts: dict[str, str] = {}
        self.default_prompt_name: str | None = None
        path = Path(resolve_model_path(model))
        weights_dir: str | Path = path if path.exists() else model
        default_pooling, default_normalize, default_len, default_include = "mean", False, None, True
        if path.exists() and is_sbert_dir(path):
            layout = read_sbert_dir(path)
            weights_dir = layout.transformer_dir
            default_pooling = layout.pooling or "mean"
            default_normalize = layout.normalize
            default_len = layout.max_seq_length
            default_include = layout.include_prompt
            self.matryoshka_dims, self.prompts, self.default_prompt_name = read_st_config(path)
        pooling = pooling or default_pooling
        POOLINGS.check(pooling, key="model.pooling")
        # a LoRA adapter saved alone (model.lora.export: adapter): its base model, then it
        adapter = saved_adapter(Path(weights_dir)) if Path(weights_dir).is_dir() else None
        base_dir = adapter[0] if adapter else str(weights_dir)
        if adapter:
            lora = adapter[1]
        try:
            config = AutoConfig.from_pretrained(base_dir, trust_remote_code=trust_remote_code)
            if dropout is not None:
                values = config.to_dict()
                for name in DROPOUT_ATTRIBUTES:
                    if isinstance(values.get(name), float):
                        setattr(config, name, dropout)
            self.model = AutoModel.from_pretrained(base_dir, config=config, trust_remote_code=trust_remote_code)
            if dropout is not None:
                for module in self.model.modules():
                    if isinstance(module, nn.Dropout):
                        module.p = dropout
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(weights_dir), trust_remote_code=trust_remote_code
            )
        except OSError as exc:
            raise ModelLoadError(
                f"cannot load model {model!r}: not a local model dir, run dir or checkpoint, "
                f"and not available offline ({str(exc).splitlines()[0]})"
            ) from None
        except ValueError as exc:
            if "trust_remote_code" not in str(exc):
                raise
            raise ModelLoadError(
                f"model {model!r} ships its own code; it runs only with model.trust_remote_code=true "
                "(set it only for a model you trust)"
            ) from None
        # BERT-style pooler heads feed no pooling here: freeze them, so DDP needs no
        # find_unused_parameters (weights are kept and saved as they are).
        children = dict(self.model.named_children())
        pooler = children.get("pooler")
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        limit = int(self.model.config.to_dict().get("max_position_embeddings") or 512)
        self.spec = TextEncoderSpec(
            model=model,
            pooling=pooling,
            normalize=default_normalize if normalize is None else normalize,
            max_seq_length=min(max_seq_length or default_len or limit, limit),
            trust_remote_code=trust_remote_code,
            dropout=dropout,
            lora=lora_settings(lora) if lora is not None else None,
            include_prompt=default_include if include_prompt is None else include_prompt,
        )
        # Models numbering positions from the first column need position ids under left
        # padding; RoBERTa-style embeddings (with a padding_idx) derive them from the ids
        # themselves, and ids from 0 would be wrong there.
        import inspect

        embeddings = children.get("embeddings")
        self._positions_from_mask = "position_ids" in inspect.signature(self.model.forward).parameters and not (
            embeddings is not None and "padding_idx" in vars(embeddings)
        )
        if adapter:
            self.model = load_adapter(self.model, Path(weights_dir))
        elif self.spec.lora is not None:  # after the forward's signature was read: the model's own
            self.model = add_lora(self.model, self.spec.lora)
        # from_pretrained returns eval mode; an nn.Module starts in train mode. Training
        # code relies on dropout being on (unsupervised SimCSE's two views come from it).
        self.train()

    @classmethod
    def check_arguments(cls, name: str, **kwargs: Any) -> None:
        """Cheap checks of config values, run before any model loads (``model.*`` keys)."""
        pooling = kwargs.get("pooling")
        if pooling is not None:
            POOLINGS.check(pooling, key="model.pooling")
        dropout = kwargs.get("dropout")
        if dropout is not None and not 0 <= dropout < 1:
            raise ValueError(f"model.dropout: must be in [0, 1), got {dropout}")
        if kwargs.get("lora") is not None:
            lora_settings(kwargs["lora"])
            require_peft()
        length = kwargs.get("max_seq_length")
        if length is not None and length < 1:
            raise ValueError(f"model.max_seq_length: must be >= 1, got {length}")

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:  # type: ignore[override]
        """Width of one pool; a batch with a ``context_mask`` embeds as ``2 * dim``."""
        return int(self.model.config.hidden_size)

    @property
    def max_seq_length(self) -> int:
        return self.spec.max_seq_length

    # ------------------------------------------------------------------ forward
    def tokenize(
        self, texts: Sequence[str], *, pad_to_multiple_of: int | None = None, pool_marks: bool = False,
        pool_context: bool = False,
    ) -> dict[str, Tensor]:
        """Token ids padded to the longest text (see :func:`tokenize_texts`)."""
        return tokenize_texts(self.tokenizer, texts, self.spec.max_seq_length, pad_to_multiple_of=pad_to_multiple_of,
                              pool_marks=pool_marks, pool_context=pool_context,
                              include_prompt=self.spec.include_prompt)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """Tokenised batch -> ``[B, H]`` sentence embeddings.

        A batch with a ``context_mask`` (``tokenize(pool_context=True)``) gives ``[B, 2H]``:
        the pool after the mark and the pool before it, each normalised when the encoder
        normalises."""
        mask = features["attention_mask"]
        inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self._positions_from_mask:
            # count positions from each row's first real token, so a left-padded text embeds
            # as it does alone; with right padding these are the model's own
            # 0..n-1 on every real token. No host sync: not gated on inspecting the mask.
            inputs["position_ids"] = (mask.long().cumsum(dim=1) - 1).clamp_min(0)
        hidden = self.model(**inputs).last_hidden_state  # [B, T, H]
        # texts with a pool mark pool only the tokens after it (tokenize_texts)
        emb = pool(self.spec.pooling, hidden, features.get("pool_mask", mask))  # [B, H]
        if self.spec.normalize:
            emb = F.normalize(emb.float(), dim=-1)
        if "context_mask" in features:
            context = pool(self.spec.pooling, hidden, features["context_mask"])  # [B, H]
            if self.spec.normalize:
                context = F.normalize(context.float(), dim=-1)
            emb = torch.cat([emb, context.to(emb.dtype)], dim=-1)  # [B, 2H]
        return emb

    # ------------------------------------------------------------------ inference
    def _length_sorted_batches(
        self, texts: Sequence[str], batch_size: int, *, length_chunk: int = 2048, pad_to_multiple_of: int | None = None,
        token_budget: int | None = None, pool_marks: bool = False,
    ) -> list[list[int]]:
        """Row indices of batches of texts of similar token length, longest first. A batch
        holds ``batch_size`` texts, or fewer where its padded width (its first, longest
        text, rounded up to ``pad_to_multiple_of``) times its rows would pass
        ``token_budget`` tokens; never fewer than one. Lengths are measured in chunks and
        only the lengths are kept: holding every text's tokenisation at once (ids and the
        tokenizer's per-text objects) cost ~200 MB more peak memory on SciFact's 5,183
        abstracts than encoding itself."""
        lengths: list[int] = []
        for start in range(0, len(texts), length_chunk):
            out = self.tokenizer(
                split_prompts([strip_pool_mark(t) if pool_marks else t for t in texts[start : start + length_chunk]])[0],
                truncation=True,
                max_length=self.spec.max_seq_length,
                padding=False, return_attention_mask=False, return_token_type_ids=False, return_length=True,
            )
            lengths += [int(n) for n in out["length"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        def width(longest: int) -> int:
            return padded_width(longest, pad_to_multiple_of, self.spec.max_seq_length)

        bounds = row_chunks([lengths[i] for i in order], batch_size, token_budget or None, width)
        return [order[s:e] for s, e in bounds]

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        precision: str = "fp32",
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        device: str | torch.device | None = None,
        pad_to_multiple_of: int | None = None,
        token_budget: int | None = None,
        pool_marks: bool = False,
        pool_context: bool = False,
    ) -> np.ndarray | Tensor:
        """Embed ``texts`` in batches of similar length; returns ``[N, H]`` float32 in input order.

        ``precision="bf16"`` runs the model under bf16 autocast (several times faster on
        CPUs with AMX, same STS within 0.01 on STS-B); outputs are float32 either way.
        ``pad_to_multiple_of`` pads each batch (masked) to a multiple of that many tokens:
        fewer distinct widths, at the cost of the extra padding (1.24x time at 16 on STS-B
        sentences, ``docs/benchmarks.md``). The embeddings are the same up to rounding,
        which in bf16 reorders near-ties.

        ``token_budget`` caps a forward pass at that many tokens (rows x padded width): a
        batch of long texts is cut into fewer rows, short texts still go ``batch_size`` at a
        time. ``None`` means :data:`CPU_TOKEN_BUDGET` on CPU and no cap elsewhere; ``0``
        means no cap. On this 2-core CPU, 1,024 SciFact abstracts of 256 tokens encoded in
        bf16 with the same embeddings, peaking 215-290 MB lower and no slower at 16 rows per
        forward than at 64 (``docs/benchmarks.md``).

        ``pool_marks``: a text with the pool mark pools only its tokens after the mark;
        ``pool_context``: every text embeds as ``[2H]``, the pool after its pool mark and
        the pool before it (:func:`tokenize_texts`).
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not a single string")
        if device is not None:
            self.to(device)
        was_training = self.training
        self.eval()
        dev = self.device
        if token_budget is not None and token_budget < 0:
            raise ValueError(f"token_budget must be >= 0 (0: no cap), got {token_budget}")
        if token_budget is None:
            token_budget = CPU_TOKEN_BUDGET if dev.type == "cpu" else 0
        out = torch.empty(len(texts), self.dim * (2 if pool_context else 1), dtype=torch.float32)
        batches = self._length_sorted_batches(
            texts, batch_size, pad_to_multiple_of=pad_to_multiple_of, token_budget=token_budget,
            pool_marks=pool_marks or pool_context,
        )
        if show_progress_bar is None:
            show_progress_bar = len(batches) > 20
        try:
            with autocast_context(dev, precision):
                for idx in tqdm(batches, desc="encode", disable=not show_progress_bar):
                    tokens = self.tokenize([texts[i] for i in idx], pad_to_multiple_of=pad_to_multiple_of,
                                           pool_marks=pool_marks, pool_context=pool_context)
                    batch = {k: v.to(dev) for k, v in tokens.items()}
                    emb = self(batch).float()
                    if normalize and not self.spec.normalize:
                        emb = F.normalize(emb, dim=-1)
                    out[idx] = emb.cpu()
        finally:
            self.train(was_training)
        return out.numpy() if convert_to_numpy else out

    # ------------------------------------------------------------------ saving
    def save(self, out_dir: str | Path) -> Path:
        """Write a sentence-transformers directory (safetensors weights), atomically."""
        out_dir = Path(out_dir)
        lora = self.spec.lora
        with atomic_dir(out_dir) as tmp:
            # LoRA: the adapters folded into a plain model, or the adapter alone (on its base)
            model = merged(self.model) if lora is not None and lora["export"] == "merged" else self.model
            model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
            self.tokenizer.save_pretrained(tmp)
            write_sbert_files(
                tmp,
                dim=self.dim,
                pooling=self.spec.pooling,
                normalize=self.spec.normalize,
                max_seq_length=self.spec.max_seq_length,
                matryoshka_dims=self.matryoshka_dims,
                prompts=self.prompts,
                default_prompt_name=self.default_prompt_name,
                include_prompt=self.spec.include_prompt,
            )
        return out_dir

    def spec_dict(self) -> dict[str, Any]:
        return asdict(self.spec)

    @classmethod
    def is_saved(cls, path: Path) -> bool:
        return is_sbert_dir(path) or (path / "config.json").is_file()

    @classmethod
    def load(cls, path: str | Path) -> TextEncoder:
        return cls(str(path))

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> TextEncoder:
        return cls(spec, **overrides)
