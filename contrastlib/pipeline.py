"""The path of a training run: config -> parts -> Lightning Trainer -> run directory.

Run directory layout::

    contrastlib_run.json   marker + status (running / finished)
    config.yaml            the resolved config
    checkpoints/last.ckpt  for resuming (also every trainer.checkpoint_every_n_steps)
    logs/metrics.csv       CSV log;  tensorboard/  TensorBoard events
    model/                 the trained encoder as a sentence-transformers directory
    metrics.json           STS before and after training
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from contrastlib import __version__
from contrastlib.config.build import build_loss, loss_kwargs
from contrastlib.config.load import to_yaml
from contrastlib.config.schema import RunConfig
from contrastlib.data.collate import HFTokenize, IndexedRows, TextTupleCollator
from contrastlib.data.readers import ScoredPairs, read_scored_pair_files, read_tuples
from contrastlib.encoders.loading import RUN_MARKER, load_encoder
from contrastlib.encoders.text import TextEncoder
from contrastlib.errors import ConfigError
from contrastlib.evaluation.sts import STSResult, evaluate_sts
from contrastlib.registry import METHODS
from contrastlib.samplers.no_duplicates import NoDuplicatesBatchSampler
from contrastlib.training.gradcache import GradCache
from contrastlib.training.trainer import build_trainer
from contrastlib.utils.io import atomic_path, write_json


@dataclass
class FitResult:
    run_dir: Path
    before: dict[str, dict[str, float]] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


def choose_run_dir(output_dir: str, name: str, resume: bool) -> Path:
    base = Path(output_dir) / name
    if resume:
        if not (base / "checkpoints" / "last.ckpt").is_file():
            raise ConfigError(f"resume: {base}/checkpoints/last.ckpt does not exist")
        return base
    if not base.exists() or not any(base.iterdir()):
        return base
    n = 2
    while (base.parent / f"{base.name}-{n}").exists():
        n += 1
    return base.parent / f"{base.name}-{n}"


def build_train_loader(
    cfg: RunConfig, rows: list[tuple[str, ...]], encoder: TextEncoder
) -> DataLoader[Any]:
    collate = TextTupleCollator(HFTokenize(encoder.tokenizer, encoder.max_seq_length))
    common: dict[str, Any] = {
        "collate_fn": collate,
        "num_workers": cfg.data.num_workers,
        "persistent_workers": cfg.data.num_workers > 0,
    }
    if cfg.data.no_duplicates:
        sampler = NoDuplicatesBatchSampler(
            rows, cfg.data.batch_size, drop_last=cfg.data.drop_last, seed=cfg.seed
        )
        return DataLoader(IndexedRows(rows), batch_sampler=sampler, **common)
    return DataLoader(
        IndexedRows(rows), batch_size=cfg.data.batch_size, shuffle=True, drop_last=cfg.data.drop_last, **common
    )


def evaluate_files(
    encoder: TextEncoder, data: dict[str, ScoredPairs], *, batch_size: int, precision: str
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for f, pairs in data.items():
        result: STSResult = evaluate_sts(encoder, pairs, batch_size=batch_size, precision=precision)
        out[f] = {"spearman": result.spearman, "pearson": result.pearson, "n_pairs": result.n_pairs}
    return out


def _write_marker(run_dir: Path, status: str, **extra: Any) -> None:
    write_json(
        run_dir / RUN_MARKER,
        {"contrastlib_version": __version__, "status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra},
    )


def _resume_log_version(run_dir: Path) -> str:
    n = 1
    while (run_dir / "logs" / f"resume-{n}").exists():
        n += 1
    return f"resume-{n}"


def fit(cfg: RunConfig, *, log: Any = print) -> FitResult:
    """Train ``cfg``'s method; evaluate ``cfg.eval.sts`` files before and after."""
    # Read every input first: bad data fails before a model is loaded or a file written.
    rows, roles = read_tuples(cfg.data.train)
    if cfg.data.max_rows is not None:
        rows = rows[: cfg.data.max_rows]
    mode = cfg.method.mode.value
    if mode == "supervised" and len(roles) < 2:
        raise ConfigError(
            f"method.mode: supervised SimCSE needs pairs or triplets, but {cfg.data.train} "
            "holds single sentences (use method.mode=unsupervised)"
        )
    sts_data = {f: read_scored_pair_files([f]) for f in cfg.eval.sts}  # read once, up front

    run_dir = choose_run_dir(cfg.output_dir, cfg.name, cfg.resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(to_yaml(cfg))
    _write_marker(run_dir, "running")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    encoder = load_encoder(
        cfg.model.name,
        pooling=cfg.model.pooling,
        normalize=cfg.model.normalize,
        max_seq_length=cfg.model.max_seq_length,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    result = FitResult(run_dir)
    metrics_path = run_dir / "metrics.json"
    if cfg.resume and metrics_path.is_file():
        result.before = json.loads(metrics_path.read_text()).get("before", {})
    elif cfg.eval.sts:
        log(f"evaluating {len(cfg.eval.sts)} STS file(s) before training")
        result.before = evaluate_files(encoder, sts_data, batch_size=cfg.eval.batch_size, precision=cfg.eval.precision)
        write_json(metrics_path, {"before": result.before})

    loss = build_loss(cfg.loss, num_samples=len(rows))
    method = METHODS.get(cfg.method.name)(
        encoder,
        loss,
        mode=mode,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        warmup_ratio=cfg.optim.warmup_ratio,
        scheduler=cfg.optim.scheduler,
        grad_cache=GradCache(cfg.gradcache.chunk_size, token_budget=cfg.gradcache.token_budget) if cfg.gradcache.enabled else None,
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        hparams={"encoder": encoder.spec_dict(), "loss": {"name": cfg.loss.name, **loss_kwargs(cfg.loss)}},
    )
    loader = build_train_loader(cfg, rows, encoder)
    t = cfg.trainer
    # Under a gradient cache the module optimises manually and does accumulation and
    # clipping itself; the Trainer must not.
    cached = cfg.gradcache.enabled
    trainer = build_trainer(
        run_dir,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        precision=t.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        gradient_clip_val=None if cached else t.gradient_clip_val,
        accumulate_grad_batches=1 if cached else t.accumulate_grad_batches,
        log_every_n_steps=t.log_every_n_steps,
        checkpoint_every_n_steps=t.checkpoint_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic,
        log_version=_resume_log_version(run_dir) if cfg.resume else "",
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt" if cfg.resume else None
    start = time.perf_counter()
    trainer.fit(method, train_dataloaders=loader, ckpt_path=str(ckpt) if ckpt else None)
    result.seconds = time.perf_counter() - start
    result.steps = int(trainer.global_step)
    # last.ckpt must hold the final state, not the last periodic save (a run that stops
    # on max_steps mid-epoch is otherwise a few steps behind model/).
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")

    if trainer.is_global_zero:
        encoder.save(run_dir / "model")
        if cfg.eval.sts:
            log(f"evaluating {len(cfg.eval.sts)} STS file(s) after training")
            result.after = evaluate_files(encoder, sts_data, batch_size=cfg.eval.batch_size, precision=cfg.eval.precision)
        write_json(
            metrics_path,
            {"before": result.before, "after": result.after, "steps": result.steps, "train_seconds": result.seconds},
        )
        _write_marker(run_dir, "finished", steps=result.steps)
    return result
