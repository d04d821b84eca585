"""The path of a training run, for every method:

    config -> method (its data, its loss check) -> job directory -> encoder -> Trainer
    -> outputs (checkpoint, exported model, metrics)

Nothing here knows text or SimCSE: the method says how its data is read and batched,
which evaluations apply, and how its model is exported; the encoder, loss and sampler
come from their registries by name. Everything that can be checked is checked before the
job directory is made or a model loaded. Under DDP the job directory is chosen once
(:mod:`contrastlib.jobs`) and evaluation and writing happen on rank 0.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from contrastlib.checkpoints import ENCODER_EXTRAS_HPARAM, ENCODER_HPARAM
from contrastlib.config.build import (
    build_encoder,
    loss_spec,
    matryoshka_spec,
    method_config,
)
from contrastlib.config.load import to_yaml
from contrastlib.config.schema import RunConfig
from contrastlib.config.sources import several_sources, source_specs
from contrastlib.errors import ConfigError, ContrastlibError
from contrastlib.evaluation.base import Evaluation, run_evaluations
from contrastlib.jobs import Job
from contrastlib.methods.base import ContrastiveModule
from contrastlib.methods.data import SourcePart, TrainData
from contrastlib.registry import ENCODERS, EVALUATIONS, SAMPLERS
from contrastlib.samplers.options import check_sampler
from contrastlib.sources import check_batches, plan_loss, prompt_names, read_sources
from contrastlib.training.gradcache import GradCache
from contrastlib.training.loader import build_loader as build_data_loader
from contrastlib.training.monitor import EvalMonitor, monitor_callbacks
from contrastlib.training.resume import (
    ResumableLoader,
    ResumeState,
    SafeCheckpointIO,
    resume_checkpoint,
)
from contrastlib.training.trainer import build_trainer
from contrastlib.utils.precision import encode_precision, resolve_precision

Metrics = dict[str, dict[str, float]]


@dataclass
class FitPlan:
    """Everything a run needs that can be read or checked without a model."""

    cfg: RunConfig
    method_cls: type[ContrastiveModule]
    method_config: Any
    data: TrainData
    #: Built here: its own argument checks run before any model loads.
    loss: Any
    sampler: str
    precision: str
    precision_reason: str
    evaluators: list[Evaluation]
    #: ``data.sampler_options``, checked against the sampler's signature (nulls left out).
    sampler_options: dict[str, Any] = field(default_factory=dict)
    #: The miner's rules for ``remine`` (None: no re-mining).
    remine_options: Any = None


@dataclass
class FitResult:
    run_dir: Path
    before: Metrics = field(default_factory=dict)
    after: Metrics = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    precision: str = ""
    #: False on DDP ranks other than 0 (they write and print nothing).
    is_zero: bool = True
    main_metrics: dict[str, str] = field(default_factory=dict)


def plan_fit(cfg: RunConfig) -> FitPlan:
    """Read the data and check that method, encoder, loss, sampler and evaluations fit
    together, by their declarations, before any model loads."""
    method_cls, config = method_config(cfg.method)
    name = cfg.method["name"]
    encoder_cls = ENCODERS.get(str(cfg.model.get("encoder")))
    if encoder_cls.inputs != method_cls.inputs:
        fitting = [e.name for e in ENCODERS.entries() if e.obj.inputs == method_cls.inputs]
        raise ConfigError(f"model.encoder: method {name!r} trains a {' or '.join(fitting)} encoder, not {cfg.model['encoder']!r}")
    specs = source_specs(cfg.data, cfg.loss)
    data = read_sources(name, method_cls, specs, config, several=several_sources(cfg.data.train), composition=cfg.data.composition,
                        max_rows=cfg.data.max_rows, on_bad_row=cfg.data.on_bad_row)
    check_batches(data, batch_size=cfg.data.batch_size, drop_last=cfg.data.drop_last, devices=cfg.trainer.devices)
    loss = plan_loss(method_cls, config, data, specs)
    sampler = cfg.data.sampler or method_cls.default_sampler
    SAMPLERS.check(sampler, key="data.sampler")
    options: dict[str, Any] = {}
    for part in data.parts or [SourcePart("train", data)]:
        try:
            options = check_sampler(sampler, cfg.data.sampler_options, part.data, cfg.data.batch_size)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (source {part.name!r})" if data.parts else str(exc)) from None
    precision, reason = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    if cfg.trainer.sync_batchnorm and (cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("trainer.sync_batchnorm: torch's SyncBatchNorm runs on GPUs only (no CUDA device here)")
    eval_precision = encode_precision(cfg.eval.precision, precision)
    evaluators: list[Evaluation] = []
    for kind, entries in cfg.eval.tasks.items():
        evaluation = EVALUATIONS.get(kind)
        if entries and evaluation.takes != method_cls.target():
            raise ConfigError(
                f"eval.{kind}: evaluation {kind!r} takes {_article(evaluation.takes)}, and method {name!r} "
                f"is evaluated as {_article(method_cls.target())}"
            )
        evaluators += [evaluation.from_entry(e, batch_size=cfg.eval.batch_size, precision=eval_precision) for e in entries]
    evaluators += method_cls.extra_evaluators(data, batch_size=cfg.eval.batch_size, precision=eval_precision)
    if cfg.eval.devices is not None:
        from contrastlib.pool import parse_devices

        try:
            devices = tuple(parse_devices(str(cfg.eval.devices)))
        except ContrastlibError as exc:
            raise ConfigError(f"eval.devices: {str(exc).removeprefix('--devices: ')}") from None
        for e in evaluators:
            if e.uses_devices:
                e.devices = devices
    method_cls.check_run(config, cfg)
    remine = None
    if cfg.remine.enabled:
        from contrastlib.training.remining import check_remining

        if data.parts:
            raise ConfigError("remine.every_n_steps: re-mining mines one source's rows; data.train names several")

        remine = check_remining(cfg.remine, data.rows, cfg.data.num_workers, data.prompts)
        if cfg.remine.corpus:
            from contrastlib.mining.inputs import read_corpus_file

            read_corpus_file(Path(cfg.remine.corpus))  # bad corpus fails before work
    return FitPlan(cfg, method_cls, config, data, loss, sampler, precision, reason, evaluators, options, remine)


def _article(target: str) -> str:
    """``strings`` -> ``an encoder of strings``; another target as it is declared."""
    return f"an encoder of {target}" if target in {e.obj.inputs for e in ENCODERS.entries()} else f"a {target}"


def _remining_callback(plan: FitPlan) -> list[Any]:
    if plan.remine_options is None:
        return []
    from contrastlib.mining.inputs import read_corpus_file
    from contrastlib.training.remining import ReMiningCallback

    r = plan.cfg.remine
    extra = read_corpus_file(Path(r.corpus))[1] if r.corpus else None
    rows: Any = plan.data.rows  # the dataset's own list: re-mining changes it in place
    return [
        ReMiningCallback(
            rows, int(r.every_n_steps or 0), plan.remine_options, extra_corpus=extra, drift_k=r.drift_k,
            batch_size=plan.cfg.eval.batch_size, precision=encode_precision(plan.cfg.eval.precision, plan.precision),
        )
    ]


def _resume_log_version(run_dir: Path) -> str:
    n = 1
    while (run_dir / "logs" / f"resume-{n}").exists():
        n += 1
    return f"resume-{n}"


def build_loader(plan: FitPlan, module: ContrastiveModule) -> ResumableLoader:
    cfg = plan.cfg
    return build_data_loader(
        plan.data, collator=module.collator, encoder=module.encoder, batch_size=cfg.data.batch_size, sampler=plan.sampler, sampler_options=plan.sampler_options,
        num_workers=cfg.data.num_workers, drop_last=cfg.data.drop_last, seed=cfg.seed, embed_batch_size=cfg.eval.batch_size,
        embed_precision=encode_precision(cfg.eval.precision, plan.precision),
    )


def fit(cfg: RunConfig, *, log: Any = print, plan: FitPlan | None = None) -> FitResult:
    """Train ``cfg``'s method; run its evaluations before and after (rank 0)."""
    plan = plan or plan_fit(cfg)  # bad data or a mismatch fails before anything is written
    job = Job.open(cfg.output_dir, cfg.name, kind="fit", resume=cfg.resume)
    result = FitResult(job.dir, precision=plan.precision, is_zero=job.is_zero)
    result.main_metrics = {e.name: e.main_metric for e in plan.evaluators}
    with job.running(report=True):
        job.start(to_yaml(cfg), precision=plan.precision, precision_reason=plan.precision_reason)
        if job.is_zero:
            log(f"precision: {plan.precision} ({plan.precision_reason})")
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        encoder = build_encoder(cfg.model)
        plan.method_cls.prepare_train_data(
            plan.data, encoder, plan.method_config, cache_dir=Path(cfg.output_dir) / "embedding-cache",
            precision=encode_precision(cfg.eval.precision, plan.precision), batch_size=cfg.eval.batch_size,
            log=log if job.is_zero else (lambda _msg: None),
        )
        module = _build_module(plan, encoder)

        metrics_path = job.dir / "metrics.json"
        if cfg.resume and metrics_path.is_file():
            result.before = json.loads(metrics_path.read_text()).get("before", {})
        elif plan.evaluators and job.is_zero:
            log(f"evaluating {len(plan.evaluators)} set(s) before training")
            result.before = run_evaluations(plan.evaluators, module.evaluation_model())
            job.write_json("metrics.json", {"before": result.before})

        loader = build_loader(plan, module)
        monitors = monitor_callbacks(
            plan.evaluators, every_n_epochs=cfg.eval.every_n_epochs, run_dir=job.dir, initial=result.before,
        )
        resume_state = ResumeState(loader, job.dir / "checkpoints" / "last.ckpt")
        trainer = _build_trainer(plan, job, module, [resume_state, *monitors])
        ckpt = resume_checkpoint(job.dir, warn=log) if cfg.resume else None
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader, ckpt_path=str(ckpt) if ckpt else None)
        result.seconds = time.perf_counter() - start
        result.steps = int(trainer.global_step)
        # last.ckpt must hold the final state, not the last periodic save. Every rank
        # calls it. A run that stopped on max_steps mid-epoch saved it at its last batch
        # already (resuming from a save made now would skip the rest of that epoch).
        if not resume_state.saved_final:
            trainer.save_checkpoint(job.dir / "checkpoints" / "last.ckpt", weights_only=False)

        if job.is_zero:
            module.export(job.dir / "model")
            monitor = next((m for m in monitors if isinstance(m, EvalMonitor)), None)
            if monitor is not None and monitor.last_step == result.steps:
                result.after = monitor.last_metrics  # the last epoch's evaluation is the final model's
            elif plan.evaluators:
                log(f"evaluating {len(plan.evaluators)} set(s) after training")
                result.after = run_evaluations(plan.evaluators, module.evaluation_model())
            done: set[str] = set()
            for e in plan.evaluators:
                e.after_fit(job.dir, projection=cfg.eval.projection, points=cfg.eval.projection_points, seed=cfg.seed,
                            log=log, done=done)
            job.write_json(
                "metrics.json",
                {"before": result.before, "after": result.after, "steps": result.steps,
                 "train_seconds": result.seconds, "precision": plan.precision},
            )
            job.finish(steps=result.steps, train_seconds=round(result.seconds, 2))
    return result


def _build_module(plan: FitPlan, encoder: Any) -> ContrastiveModule:
    cfg = plan.cfg
    loss = plan.loss
    try:
        loss.check_embedding_dim(encoder.dim)
    except ValueError as exc:
        raise ConfigError(f"loss.matryoshka.{exc}") from None
    if loss.embedding_dims():  # evaluations report each prefix; the export records them
        encoder.matryoshka_dims = loss.embedding_dims()
    # the prompts the run trains with, named as sentence-transformers names them (none: a
    # base model's own prompts are not what this run trained, and are not exported again)
    encoder.prompts = prompt_names(plan.data)
    encoder.default_prompt_name = None
    grad_cache = (
        GradCache(cfg.gradcache.chunk_size, token_budget=cfg.gradcache.token_budget,
                  pad_to_multiple_of=cfg.trainer.pad_to_multiple_of)
        if cfg.gradcache.enabled else None
    )
    _, loss_kwargs = loss_spec(cfg.loss)
    matryoshka = matryoshka_spec(cfg.loss)
    loss_hparams = {"name": cfg.loss["name"], **loss_kwargs, **({"matryoshka": matryoshka} if matryoshka else {})}
    extras = {"prompts": dict(encoder.prompts), "matryoshka_dims": list(encoder.matryoshka_dims)}
    hparams = {ENCODER_HPARAM: {"kind": encoder.kind, **encoder.spec_dict()}, ENCODER_EXTRAS_HPARAM: extras,
               "loss": loss_hparams}
    return plan.method_cls.from_config(
        encoder, loss, plan.method_config,
        lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, warmup_ratio=cfg.optim.warmup_ratio,
        scheduler=cfg.optim.scheduler, optimizer=cfg.optim.name, momentum=cfg.optim.momentum,
        grad_cache=grad_cache, accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        gradient_clip_val=cfg.trainer.gradient_clip_val, length_group_rows=cfg.trainer.length_group_rows,
        pad_to_multiple_of=cfg.trainer.pad_to_multiple_of, hparams=hparams, data=plan.data,
    )


def _build_trainer(plan: FitPlan, job: Job, module: ContrastiveModule, monitors: list[Any]) -> pl.Trainer:
    t = plan.cfg.trainer
    # Under a gradient cache the module optimises manually and does accumulation and
    # clipping itself; the Trainer must not.
    cached = plan.cfg.gradcache.enabled
    return build_trainer(
        job.dir,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        precision=plan.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        gradient_clip_val=None if cached else t.gradient_clip_val,
        accumulate_grad_batches=1 if cached else t.accumulate_grad_batches,
        log_every_n_steps=t.log_every_n_steps,
        checkpoint_every_n_steps=t.checkpoint_every_n_steps,
        keep_step_checkpoints=t.keep_step_checkpoints,
        enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic,
        sync_batchnorm=t.sync_batchnorm,
        extra_callbacks=[*_remining_callback(plan), *monitors],
        log_version=_resume_log_version(job.dir) if plan.cfg.resume else "",
        plugins=[SafeCheckpointIO()],
    )


def describe(plan: FitPlan) -> str:
    """What ``fit --dry-run`` prints after the resolved config."""
    options = ", ".join(f"{k}={v}" for k, v in plan.sampler_options.items())
    lines = [
        f"method: {plan.cfg.method['name']} {plan.method_config}",
        *_describe_data(plan),
        f"sampler: {plan.sampler}{f' ({options})' if options else ''}, batch {plan.cfg.data.batch_size} per device",
        f"loss: {_describe_loss(plan)}",
        f"precision: {plan.precision} ({plan.precision_reason})",
        f"evaluations: {', '.join(e.name for e in plan.evaluators) or 'none'}",
    ]
    return "\n".join(lines)


def _describe_data(plan: FitPlan) -> list[str]:
    data = plan.data
    if not data.parts:
        return [f"data: {data.source}: {len(data.rows)} rows, {data.description}"]
    lines = [f"data: {len(data.rows)} rows from {len(data.parts)} sources, {data.composition}"]
    for p in data.parts:
        weight = f", weight {p.weight:g}" if p.weight != 1 else ""
        lines.append(f"  {p.name}: {p.data.source}: {len(p.data.rows)} rows, {p.data.description}{weight}")
    return lines


def _describe_loss(plan: FitPlan) -> str:
    """The loss's name; several sources: each source's (``info_nce (nli), cosent (sts)``)."""
    matryoshka = " in loss.matryoshka" if plan.loss.embedding_dims() else ""
    if not plan.data.parts:
        return f"{plan.cfg.loss['name']}{matryoshka}"
    specs = source_specs(plan.cfg.data, plan.cfg.loss)
    return ", ".join(f"{s.loss['name']} ({s.name})" for s in specs) + matryoshka
