"""Gradient caching: batch size decoupled from memory (Gao et al. 2021, "Scaling Deep
Contrastive Learning Batch Size under Memory Limited Setup").

One step over a batch whose inputs are split into chunks:

1. **Embed without a graph**, chunk by chunk, saving each chunk's random state first (the
   CPU generator and every CUDA device the encoder uses, saved explicitly, or dropout differs between the two passes).
2. **Loss on detached embeddings** (leaf tensors): ``autograd.grad`` gives the cached
   gradient ``dL/de`` for every embedding, cross-device gather included, and ``dL/dp`` for
   every trainable parameter outside the encoder (a projection head or predictor applied
   in the loss step, a learnable temperature). This backward is never loss-scaled: the
   cached gradients are exact, and they stay float32.
3. **Replay each chunk with a graph** under its saved random state (dropout masks are the
   same, so the embeddings are identical) and back-propagate the surrogate
   ``sum(float(e) * dL/de)`` through the encoder with the caller's ``backward`` (Lightning's
   ``manual_backward``, which applies an AMP loss scale once). The product is taken in
   float32, so the loss scale multiplies the cached gradient before anything is cast to
   fp16 (small cached gradients would underflow otherwise). The parameters outside the
   encoder ride on the last chunk's surrogate as ``sum(p * dL/dp)``. All chunks but the
   last run under ``no_sync`` so DDP all-reduces once per step.

The global random state ends where plain chunked forwards would leave it. BatchNorm
running statistics are updated by pass 1 only (pass 2 restores them); chunked BatchNorm
normalises each chunk with its own statistics, which is not full-batch BatchNorm: a
warning says so.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from contrastlib.losses.functional import autocast_off
from contrastlib.utils.shapes import padded_width, row_chunks

Features = Mapping[str, Tensor]
Inputs = Features | Tensor


@dataclass
class _RandomState:
    cpu: Tensor
    cuda: dict[int, Tensor] = field(default_factory=dict)

    @classmethod
    def capture(cls, cuda_devices: Sequence[int]) -> _RandomState:
        return cls(torch.get_rng_state(), {d: torch.cuda.get_rng_state(d) for d in cuda_devices})

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block under this state; the global state is restored afterwards."""
        devices = list(self.cuda)
        with torch.random.fork_rng(devices=devices, enabled=True, device_type="cuda"):
            torch.set_rng_state(self.cpu)
            for d, state in self.cuda.items():
                torch.cuda.set_rng_state(state, d)
            yield


def cuda_devices_of(module: nn.Module) -> list[int]:
    """Every CUDA device holding a parameter or buffer of ``module`` (not inferred from CPU)."""
    devices = {t.device.index for t in [*module.parameters(), *module.buffers()] if t.device.type == "cuda"}
    return sorted(d if d is not None else torch.cuda.current_device() for d in devices)


Chunk = tuple[Tensor, Inputs]  # (row indices into the batch [n], the chunk's inputs)


def split_rows(
    inputs: Inputs, chunk_size: int | None, token_budget: int | None, *, group_by_length: bool = True,
    pad_to_multiple_of: int | None = None, max_width: int | None = None,
) -> list[Chunk]:
    """Split a batch into row chunks: ``chunk_size`` rows, or as many rows as fit in
    ``token_budget`` padded tokens (text).

    For text, rows are grouped by length (longest first) and each chunk is trimmed to its
    own longest row, so chunks carry little padding: the loss does not depend on row
    order, and embeddings go back to their rows by index. ``pad_to_multiple_of`` rounds
    each chunk's width up to a multiple of that many tokens, padding past the batch's
    width (masked zeros) up to ``max_width`` (the encoder's window): a handful of
    distinct shapes instead of one per length, which CPU kernels and the allocator reuse
    (on HH-RLHF fine-tuning, widths of any length grew peak memory step after step;
    ``docs/benchmarks.md``).
    """
    if isinstance(inputs, Tensor):
        n = inputs.shape[0]
        size = chunk_size or n
        return [(torch.arange(s, min(s + size, n)), inputs[s : s + size]) for s in range(0, n, size)]
    original = inputs
    mask = inputs["attention_mask"]
    n, full = mask.shape
    right_padded = bool((mask[:, 0] == 1).all())

    cap = max(full, max_width or 0)

    def width(longest: int) -> int:
        return padded_width(longest, pad_to_multiple_of, cap) if right_padded else full

    if group_by_length and right_padded:
        order = torch.argsort(mask.sum(dim=1), descending=True, stable=True)
        inputs = {k: v[order] for k, v in inputs.items()}
        mask = inputs["attention_mask"]
    else:
        order = torch.arange(n)
    lengths = [int(x) for x in mask.sum(dim=1).tolist()]
    bounds = row_chunks(lengths, chunk_size, token_budget, width)
    if len(bounds) == 1:  # one chunk: grouping saves nothing; the rows in their order
        w = width(int(max(lengths)))
        return [(torch.arange(n), {k: _fit_width(v, w) for k, v in original.items()})]
    chunks: list[Chunk] = []
    for s, e in bounds:
        w = width(int(max(lengths[s:e])))
        chunks.append((order[s:e], {k: _fit_width(v[s:e], w) for k, v in inputs.items()}))
    return chunks


def _fit_width(v: Tensor, width: int) -> Tensor:
    """A ``[B, T]`` tensor cut or zero-padded to ``width`` columns (padding is masked, so
    its values do not matter); other tensors as they are."""
    if v.dim() != 2 or v.shape[1] == width:
        return v
    if v.shape[1] > width:
        return v[:, :width]
    return torch.nn.functional.pad(v, (0, width - v.shape[1]))


def _to_rows(chunks: Sequence[Chunk], outs: Sequence[Tensor]) -> Tensor:
    """Chunk outputs back in batch-row order."""
    stacked = torch.cat(list(outs))
    rows = torch.cat([i for i, _ in chunks]).to(stacked.device)
    return torch.empty_like(stacked).index_copy(0, rows, stacked)


def embed_in_chunks(encoder: nn.Module, chunks: Sequence[Chunk]) -> Tensor:
    """Encode every chunk and put each embedding back in its row (with the graph, if on)."""
    return _to_rows(chunks, [encoder(c) for _, c in chunks])


def _batchnorm_buffers(module: nn.Module) -> list[tuple[_BatchNorm, dict[str, Tensor]]]:
    return [
        (m, {k: b.detach().clone() for k, b in m.named_buffers(recurse=False) if b is not None})
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]


@dataclass
class GradCacheStats:
    """What one step did (for tests and logs)."""

    chunks_per_view: list[int]
    first_pass: list[list[Tensor]] = field(default_factory=list)
    second_pass: list[list[Tensor]] = field(default_factory=list)


class GradCache:
    """Cached-gradient step over (encoder, loss); see the module docstring.

    Args:
        chunk_size: rows per chunk.
        token_budget: for text, at most this many padded tokens per chunk (rows x longest).
        pad_to_multiple_of: round each chunk's width up to a multiple of this (text; see
            :func:`split_rows`).
        record: keep both passes' embeddings in ``last_stats`` (tests use it).
    """

    _warned_batchnorm = False

    def __init__(
        self, chunk_size: int | None = None, *, token_budget: int | None = None, pad_to_multiple_of: int | None = None,
        record: bool = False,
    ) -> None:
        if chunk_size is None and token_budget is None:
            raise ValueError("gradient cache needs chunk_size or token_budget")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if token_budget is not None and token_budget < 1:
            raise ValueError(f"token_budget must be >= 1, got {token_budget}")
        self.chunk_size, self.token_budget, self.record = chunk_size, token_budget, record
        self.pad_to_multiple_of = pad_to_multiple_of
        self.last_stats: GradCacheStats | None = None

    def step(
        self,
        encoder: nn.Module,
        views: Sequence[Inputs],
        loss_fn: Callable[[list[Tensor]], Tensor],
        *,
        backward: Callable[[Tensor], Any] | None = None,
        no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        sync_last: bool = True,
        extra_params: Sequence[nn.Parameter] = (),
        max_width: int | None = None,
    ) -> Tensor:
        """Accumulate the gradient of ``loss_fn([encoder(v) for v in views])`` into ``encoder``.

        Args:
            encoder: called on each chunk of each view.
            views: the inputs of each view (a tensor or a dict of ``[B, T]`` tensors).
            loss_fn: embeddings per view -> scalar loss (may gather across devices).
            backward: how to back-propagate a surrogate (default ``Tensor.backward``).
            no_sync: context that stops DDP from all-reducing (default none).
            max_width: the encoder's window in tokens (text), which padded chunks never pass.
            sync_last: let the last chunk's backward all-reduce (off when accumulating
                more batches before the optimizer step).
            extra_params: parameters ``loss_fn`` may use directly (pass every trainable
                parameter of the module: heads, predictors, learnable temperatures, tied
                encoder weights). Their cached gradients ride on the last surrogate, so
                they are synced and scaled like the encoder's; parameters the loss step
                does not reach get none (the encoder's come from pass 2).
        Returns:
            The loss (detached).
        """
        backward = backward or (lambda t: t.backward())
        no_sync = no_sync or contextlib.nullcontext
        devices = cuda_devices_of(encoder)
        chunked = [split_rows(v, self.chunk_size, self.token_budget, pad_to_multiple_of=self.pad_to_multiple_of,
                              max_width=max_width) for v in views]
        stats = GradCacheStats([len(c) for c in chunked])
        has_bn = any(isinstance(m, _BatchNorm) and m.training for m in encoder.modules())
        if has_bn and not GradCache._warned_batchnorm:
            warnings.warn(
                "gradient cache with BatchNorm: each chunk is normalised with its own batch "
                "statistics, which is not full-batch BatchNorm; running statistics are "
                "updated by the first pass only",
                stacklevel=2,
            )
            GradCache._warned_batchnorm = True

        # Pass 1: embeddings without a graph, random state saved per chunk.
        states: list[list[_RandomState]] = []
        embeddings: list[Tensor] = []
        with torch.no_grad():
            for chunks in chunked:
                view_states, outs = [], []
                for _, chunk in chunks:
                    view_states.append(_RandomState.capture(devices))
                    outs.append(encoder(chunk))
                states.append(view_states)
                embeddings.append(_to_rows(chunks, outs))
                if self.record:
                    stats.first_pass.append([o.detach().clone() for o in outs])

        # Loss and cached gradients on detached leaves (never loss-scaled). The loss step's
        # forward runs under the caller's autocast, as in a plain step (heads in bf16; the
        # losses switch autocast off themselves); its backward runs with autocast off, as
        # Lightning's automatic backward does (inside autocast it would run in bf16).
        # Leaves at least float32: dL/de takes the leaf's dtype and must not be fp16.
        leaves = [e.detach().to(torch.promote_types(e.dtype, torch.float32)).requires_grad_() for e in embeddings]
        params = [p for p in extra_params if p.requires_grad]
        with torch.enable_grad():
            loss = loss_fn(leaves)
            with autocast_off():
                grads = torch.autograd.grad(loss, [*leaves, *params], allow_unused=True)
        cached = [g if g is not None else torch.zeros_like(leaf) for g, leaf in zip(grads, leaves, strict=False)]
        param_grads = [(p, g) for p, g in zip(params, grads[len(leaves) :], strict=True) if g is not None]

        # Pass 2: replay each chunk with a graph, back-propagate the surrogate.
        saved_bn = _batchnorm_buffers(encoder)
        jobs = [(v, i) for v in range(len(chunked)) for i in range(len(chunked[v]))]
        for n, (v, i) in enumerate(jobs):
            last = n == len(jobs) - 1
            rows, chunk = chunked[v][i]
            grad = cached[v][rows.to(cached[v].device)]
            sync = contextlib.nullcontext() if (last and sync_last) else no_sync()
            with sync, torch.enable_grad():
                with states[v][i].replay():
                    out = encoder(chunk)  # under the caller's autocast, as in pass 1
                if self.record:
                    if len(stats.second_pass) <= v:
                        stats.second_pass.append([])
                    stats.second_pass[v].append(out.detach().clone())
                # The backward runs outside autocast, as Lightning's automatic optimisation
                # runs it; the product is float32, so the loss scale applies before any cast.
                with autocast_off():
                    surrogate = (out.to(grad.dtype) * grad).sum()
                    if last:
                        for p, g in param_grads:
                            surrogate = surrogate + (p * g).sum()
                    backward(surrogate)
        for module, buffers in saved_bn:
            for name, value in buffers.items():
                module.get_buffer(name).copy_(value)
        self.last_stats = stats
        return loss.detach()


def embed_length_grouped(encoder: Any, views: list[Inputs], group_rows: int | None,
                         pad_to_multiple_of: int | None = None) -> list[Tensor]:
    """Encoder outputs for every view, with their graph.

    Text views (dicts of ``[B, T]`` tensors) are pooled, sorted by length and encoded in
    groups of ``group_rows`` rows, each padded only to its own longest row, then put back
    in order: the same embeddings with fewer padded tokens and fewer, fuller forward calls
    (an SNLI triplet batch is 55% padding at one width per column, 27% in pooled groups of
    32; ``scripts/bench_grouping.py``). Padding positions are masked, so their token ids do
    not matter. Views of other kinds, or text views with different keys, go one forward
    each (as does ``group_rows=None``).
    """
    texts = [v for v in views if not isinstance(v, Tensor)]
    if not group_rows or len(texts) != len(views) or len({frozenset(v) for v in texts}) != 1:
        return [encoder(v) for v in views]
    width = max(v["input_ids"].shape[1] for v in texts)
    pooled = {k: torch.cat([nn.functional.pad(v[k], (0, width - v[k].shape[1])) for v in texts]) for k in texts[0]}
    chunks = split_rows(pooled, group_rows, None, pad_to_multiple_of=pad_to_multiple_of, max_width=encoder.max_seq_length)
    emb = embed_in_chunks(encoder, chunks)
    return list(emb.split([v["input_ids"].shape[0] for v in texts]))
