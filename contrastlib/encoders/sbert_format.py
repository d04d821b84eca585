"""Reading and writing the sentence-transformers directory layout.

Only the file format lives here (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``), so that a model saved by contrastlib loads with
``SentenceTransformer(dir)`` and a sentence-transformers model loads here, with no
import of sentence-transformers at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
    "pooling_mode_max_tokens": "max",
}


@dataclass(frozen=True)
class SbertLayout:
    transformer_dir: Path
    pooling: str | None
    normalize: bool
    max_seq_length: int | None
    #: The Pooling module's ``include_prompt`` (sentence-transformers' default: true).
    include_prompt: bool = True


def is_sbert_dir(path: Path) -> bool:
    return (path / "modules.json").is_file()


def read_sbert_dir(path: Path) -> SbertLayout:
    modules = json.loads((path / "modules.json").read_text())
    transformer_dir, pooling, normalize, include_prompt = path, None, False, True
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = path / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = sub
        elif kind == "Pooling":
            cfg = json.loads((sub / "config.json").read_text())
            include_prompt = bool(cfg.get("include_prompt", True))
            if "pooling_mode" in cfg and isinstance(cfg["pooling_mode"], str):
                pooling = {"lasttoken": "last"}.get(cfg["pooling_mode"], cfg["pooling_mode"])
            else:
                modes = [name for key, name in _POOLING_KEYS.items() if cfg.get(key)]
                if len(modes) != 1:
                    raise ValueError(f"{sub / 'config.json'}: unsupported pooling {modes}")
                pooling = modes[0]
        elif kind == "Normalize":
            normalize = True
    max_len = None
    cfg_path = transformer_dir / "sentence_bert_config.json"
    if not cfg_path.is_file():
        cfg_path = path / "sentence_bert_config.json"
    if cfg_path.is_file():
        max_len = json.loads(cfg_path.read_text()).get("max_seq_length")
    return SbertLayout(transformer_dir, pooling, normalize, max_len, include_prompt)


def write_sbert_files(
    out: Path, *, dim: int, pooling: str, normalize: bool, max_seq_length: int,
    matryoshka_dims: tuple[int, ...] = (), prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None, include_prompt: bool = True,
) -> None:
    """Write the sentence-transformers metadata beside a saved Hugging Face model in ``out``."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    pool_cfg: dict[str, object] = {"word_embedding_dimension": dim}
    for key, name in _POOLING_KEYS.items():
        pool_cfg[key] = name == pooling
    pool_cfg["pooling_mode_mean_sqrt_len_tokens"] = False
    pool_cfg["pooling_mode_weightedmean_tokens"] = False
    pool_cfg["include_prompt"] = include_prompt
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg, indent=2))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2)
    )
    config: dict[str, object] = {"prompts": dict(prompts or {}), "default_prompt_name": default_prompt_name,
                                 "similarity_fn_name": "cosine"}
    if matryoshka_dims:  # ours; sentence-transformers reads the keys it knows and leaves this one
        config["matryoshka_dims"] = list(matryoshka_dims)
    (out / "config_sentence_transformers.json").write_text(json.dumps(config, indent=2))


def read_st_config(path: Path) -> tuple[tuple[int, ...], dict[str, str], str | None]:
    """``(matryoshka_dims, prompts, default_prompt_name)`` of a sentence-transformers
    directory's ``config_sentence_transformers.json`` (the first ours: none elsewhere)."""
    cfg_path = path / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    dims = tuple(int(d) for d in cfg.get("matryoshka_dims") or ())
    prompts = {str(k): str(v) for k, v in (cfg.get("prompts") or {}).items()}
    return dims, prompts, cfg.get("default_prompt_name")
