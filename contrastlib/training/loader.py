"""A method's training data as batches: the registered sampler built on the rows (with the
embeddings, labels or neighbours it declares it needs), and a resumable DataLoader with the
method's collator. The pipeline and :class:`MethodDataModule` (the Python API's
``LightningDataModule``) build it the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch

from contrastlib.registry import SAMPLERS
from contrastlib.samplers.options import check_sampler, sampler_data
from contrastlib.training.resume import ResumableLoader

if TYPE_CHECKING:
    from contrastlib.methods.base import ContrastiveModule
    from contrastlib.methods.data import TrainData


def build_loader(
    data: TrainData, module: ContrastiveModule, *, batch_size: int, sampler: str, sampler_options: Mapping[str, Any],
    num_workers: int = 0, drop_last: bool = False, seed: int = 42, embed_batch_size: int = 128,
    embed_precision: str = "fp32",
) -> ResumableLoader:
    """Batches of ``data`` for ``module``: ``sampler`` (a registered name) with its options;
    a sampler that needs embeddings gets each row's anchor embedded by ``module``'s encoder."""
    cls = SAMPLERS.get(sampler)
    kwargs = {**sampler_data(cls, data), **sampler_options}
    if "embeddings" in cls.needs:
        assert data.anchors is not None  # (checked against the sampler's needs before any model loaded)
        kwargs["embeddings"] = module.encoder.encode(data.anchors, batch_size=embed_batch_size, precision=embed_precision)
    batches = cls(data.sampler_rows(), batch_size, drop_last=drop_last, seed=seed, **kwargs)
    if data.epoch_indexed:
        # random views seeded by (seed, epoch, row): the same under any workers and resumes
        batches.tag_epoch = True
        data.dataset.seed = seed  # type: ignore[attr-defined]
    return ResumableLoader(
        data.dataset,
        batch_sampler=batches,
        collate_fn=module.collator(),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # workers' base seeds from the loader's own generator: making an iterator draws
        # nothing from the global random state (exact resume, training/resume.py)
        generator=torch.Generator().manual_seed(seed),
    )


class MethodDataModule(pl.LightningDataModule):
    """A method's training data for a ``pl.Trainer`` of your own (the Python API)::

        encoder = TextEncoder("all-MiniLM-L6-v2")
        data = SimCSE.datamodule("nli.tsv", SimCSEConfig(), encoder, batch_size=64)
        model = SimCSE.from_config(encoder, InfoNCELoss(0.05), SimCSEConfig(), data=data.data)
        pl.Trainer(max_epochs=1).fit(model, datamodule=data)

    ``sampler`` defaults to the method's own; its options are checked as ``data.sampler_options``.
    """

    def __init__(self, data: TrainData, *, batch_size: int, sampler: str, sampler_options: Mapping[str, Any] | None = None,
                 num_workers: int = 0, drop_last: bool = False, seed: int = 42, embed_batch_size: int = 128,
                 embed_precision: str = "fp32") -> None:
        super().__init__()
        SAMPLERS.check(sampler, key="sampler")
        self.data = data
        self.sampler = sampler
        self.sampler_options = check_sampler(sampler, sampler_options or {}, data, batch_size)
        self.batch_size, self.num_workers, self.drop_last, self.seed = batch_size, num_workers, drop_last, seed
        self.embed_batch_size, self.embed_precision = embed_batch_size, embed_precision

    def train_dataloader(self) -> ResumableLoader:
        module: Any = self.trainer.lightning_module if self.trainer is not None else None
        return build_loader(
            self.data, module, batch_size=self.batch_size, sampler=self.sampler, sampler_options=self.sampler_options,
            num_workers=self.num_workers, drop_last=self.drop_last, seed=self.seed,
            embed_batch_size=self.embed_batch_size, embed_precision=self.embed_precision,
        )
