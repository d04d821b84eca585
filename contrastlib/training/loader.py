"""A method's training data as batches: the registered sampler built on the rows (with the
embeddings, labels or neighbours it declares it needs), and a resumable DataLoader with the
method's collator. The pipeline and the Python API's ``LightningDataModule``
(:class:`~contrastlib.methods.data.MethodDataModule`) build it the same way. A run on
several sources gets one sampler and one collator per source, and batches that each come
from one source (:class:`~contrastlib.samplers.sources.SourcesSampler`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from contrastlib.data.prompts import with_prompt
from contrastlib.data.sources import SourcesCollator
from contrastlib.registry import SAMPLERS
from contrastlib.samplers.base import GlobalBatchSampler
from contrastlib.samplers.options import sampler_data
from contrastlib.samplers.sources import SourcesSampler
from contrastlib.training.resume import ResumableLoader

if TYPE_CHECKING:
    from contrastlib.encoders.base import Encoder

Collate = Callable[[list[Any]], Any]


def build_loader(
    data: Any, *, collator: Callable[[Any], Collate], encoder: Encoder, batch_size: int, sampler: str,
    sampler_options: Mapping[str, Any],
    num_workers: int = 0, drop_last: bool = False, seed: int = 42, embed_batch_size: int = 128,
    embed_precision: str = "fp32",
) -> ResumableLoader:
    """Batches of ``data`` (a method's ``TrainData``) through ``collator(data)`` (the
    method's collator for those rows): ``sampler`` (a registered name) with its options; a
    sampler that needs embeddings gets each row's anchor embedded by ``encoder``, the one
    being trained."""
    def one(part: Any, part_seed: int) -> GlobalBatchSampler:
        cls = SAMPLERS.get(sampler)
        kwargs = {**sampler_data(cls, part), **sampler_options}
        if "embeddings" in cls.needs:
            assert part.anchors is not None  # (checked against the sampler's needs before any model loaded)
            anchors = with_prompt(part.anchors, part.prompts[0]) if part.prompts and part.prompts[0] else part.anchors
            kwargs["embeddings"] = encoder.encode(anchors, batch_size=embed_batch_size, precision=embed_precision)
        made: GlobalBatchSampler = cls(part.sampler_rows(), batch_size, drop_last=drop_last, seed=part_seed, **kwargs)
        return made

    batches: GlobalBatchSampler
    collate: Collate
    if data.parts:
        # each source batched by its own sampler (seeded apart), its collator with its prompts
        batches = SourcesSampler([one(p.data, seed + i) for i, p in enumerate(data.parts)], data.composition,
                                 batch_size=batch_size, drop_last=drop_last, seed=seed)
        collate = SourcesCollator([collator(p.data) for p in data.parts])
    else:
        batches, collate = one(data, seed), collator(None)
    if data.epoch_indexed:
        # random views seeded by (seed, epoch, row): the same under any workers and resumes
        batches.tag_epoch = True
        data.dataset.seed = seed
    return ResumableLoader(
        data.dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # workers' base seeds from the loader's own generator: making an iterator draws
        # nothing from the global random state (exact resume, training/resume.py)
        generator=torch.Generator().manual_seed(seed),
    )
