"""Every loss under real ``torch.autocast("cpu", bfloat16)`` equals its float32 computation
on the same embeddings (low temperatures overflow in half precision otherwise).

Inside autocast a matmul on float32 inputs runs in bf16. The loss core switches autocast
off and computes similarities, softmax and reductions in float32, so under autocast it
executes the same float32 kernels on the same inputs as outside it.

Tolerance, derived: float32 has unit roundoff u = 2**-24. Logits are cos/tau with |cos| <= 1,
so |logit| <= 1/tau = 20 at tau = 0.05; a float32 logit carries an error of at most about
D * u * 20 (D = 16 products summed) ~ 1.9e-5 in the worst case, and the log-sum-exp and the
mean add a few u relative. Two runs of identical kernels differ by less than that (here
they are bitwise equal), so we allow TOL = 16 * 2 * u / tau ~ 3.8e-5 absolute on the loss
and, relative to the largest gradient entry, on the gradients.

Had the matmul run in bf16 (u = 2**-8), a logit could be off by up to 20 * 2**-8 ~ 0.08:
``test_the_tolerance_discriminates`` shows a bf16 computation misses TOL by orders of
magnitude, so these tests fail on a loss that leaves autocast on.
"""

from __future__ import annotations

import pytest
import torch

from contrastlib.losses import InfoNCELoss, info_nce
from contrastlib.registry import LOSSES

TAU = 0.05
B, D = 8, 16
U32 = 2.0**-24
TOL = D * 2 * U32 / TAU


def _inputs(hard_negatives: bool, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(B, D, generator=g)
    c = torch.randn(2 * B if hard_negatives else B, D, generator=g)
    c[:B] = 0.5 * a + c[:B]  # positives correlated with their anchors (cos ~ 0.45)
    return a.to(dtype), c.to(dtype)


def _make(name: str) -> torch.nn.Module:
    cls = LOSSES.get(name)
    import inspect

    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, object] = {}
    if "num_samples" in params:
        kwargs["num_samples"] = B
    if "temperature" in params:
        kwargs["temperature"] = 0.1 if name == "ati" else TAU
    if "min_temperature" in params:
        kwargs["min_temperature"] = 0.01
    return cls(**kwargs)


def _loss_and_grads(loss_fn: torch.nn.Module, a: torch.Tensor, c: torch.Tensor, autocast: bool):
    a, c = a.clone().requires_grad_(), c.clone().requires_grad_()
    # the optional inputs a loss cannot do without: dataset ids (ATI), pair scores (CoSENT)
    needed = {"ids": torch.arange(B), "scores": torch.linspace(0, 5, B)}
    kwargs = {k: v for k, v in needed.items() if k in loss_fn.requires}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(a, c, **kwargs)
    loss.backward()
    return loss.detach(), a.grad, c.grad


def _close(x: torch.Tensor, y: torch.Tensor, scale: float) -> None:
    torch.testing.assert_close(x.float(), y.float(), atol=TOL * max(scale, 1.0), rtol=0)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_under_bf16_autocast_equals_float32(name):
    loss_fn = _make(name)
    a, c = _inputs(loss_fn.hard_negatives)
    ref, ga, gc = _loss_and_grads(loss_fn, a, c, autocast=False)
    got, ha, hc = _loss_and_grads(loss_fn, a, c, autocast=True)
    assert got.dtype == torch.float32, f"{name} returned {got.dtype} under autocast"
    _close(got, ref, 1.0)
    _close(ha, ga, float(ga.abs().max()))
    _close(hc, gc, float(gc.abs().max()))


@pytest.mark.parametrize("name", LOSSES.names())
def test_bf16_embeddings_are_scored_in_float32(name):
    """Embeddings that come out of a bf16 model: the loss equals float32 arithmetic on them."""
    loss_fn = _make(name)
    a, c = _inputs(loss_fn.hard_negatives, torch.bfloat16)
    ref, *_ = _loss_and_grads(loss_fn, a.float(), c.float(), autocast=False)
    got, *_ = _loss_and_grads(loss_fn, a, c, autocast=True)
    _close(got, ref, 1.0)


def test_chunked_info_nce_under_autocast_equals_plain_under_autocast():
    a, c = _inputs(True)
    for symmetric in (False, True):
        plain = _loss_and_grads(InfoNCELoss(TAU, symmetric=symmetric), a, c, autocast=True)
        chunked = _loss_and_grads(InfoNCELoss(TAU, symmetric=symmetric, chunk_size=3), a, c, autocast=True)
        for x, y in zip(chunked, plain, strict=True):
            _close(x, y, float(y.abs().max()))


def test_the_tolerance_discriminates():
    """The same InfoNCE with its matmul in bf16 misses TOL by far: a loss that left
    autocast on would fail the tests above."""
    a, c = _inputs(True)
    an, cn = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(c, dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits_bf16 = (an @ cn.T).float() / TAU  # what autocast does to a plain matmul
    logits_32 = an @ cn.T / TAU
    assert (logits_bf16 - logits_32).abs().max() > 100 * TOL
    target = torch.arange(B)
    loss_bf16 = torch.nn.functional.cross_entropy(logits_bf16, target)
    loss_32 = torch.nn.functional.cross_entropy(logits_32, target)
    assert loss_32 == pytest.approx(float(info_nce(a, c, temperature=TAU)), abs=TOL)
    assert abs(float(loss_bf16 - loss_32)) > 10 * TOL
