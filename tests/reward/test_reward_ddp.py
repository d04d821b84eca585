"""The reward method under DDP through the command users run: ``contrastlib fit reward-hh
trainer.devices=2`` (Lightning's DDP, 2 gloo processes on CPU) against one process at
twice the per-device batch. Every step's global batch is the same rows, so the loss at
each step and the exported head must agree (on the tiny BERT: an equivalence, whatever
the weights).

BCO's reward shift ``delta`` is a running mean of the batch's rewards: each rank must
add the global batch's mean, not its own half's (DDP's buffer broadcast would otherwise
keep rank 0's half-batch mean and the run would not be the one-process run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests_helpers import ddp_beside_one, train_losses

PER_DEVICE, WORLD = 8, 2


def _args(out: Path, head: str, frozen: bool, model: str, *, batch: int) -> list[str]:
    return [
        "fit", "reward-hh", f"output_dir={out}", "name=x", f"model.name={model}",
        f"method.head.name={head}", "method.head.hidden=32", "method.heldout_fraction=0.0", "data.on_bad_row=skip",
        "model.max_seq_length=48", "data.max_rows=64", f"data.batch_size={batch}", "eval.batch_size=64",
        "optim.name=sgd", "optim.lr=0.5", "optim.momentum=0.0", "optim.weight_decay=0.0", "optim.warmup_ratio=0.0",
        "optim.scheduler=constant", "trainer.precision=32-true", "trainer.max_steps=3", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"method.frozen={str(frozen).lower()}",
        "model.dropout=0.0",
    ]


def _head(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "model" / "reward_head.safetensors")


@pytest.mark.parametrize(
    ("head", "frozen"),
    [
        pytest.param("bco", True, id="bco-frozen"),
        # the fine-tuned encoder through DDP (its gradients averaged by Lightning's DDP):
        # 40 s more, so with -m slow; the frozen case covers the method's DDP path in CI
        pytest.param("bradley_terry", False, id="bradley_terry-finetuned", marks=pytest.mark.slow),
    ],
)
def test_ddp_reward_fit_equals_one_process_at_twice_the_batch(tmp_path: Path, head: str, frozen: bool,
                                                              tiny_model: str) -> None:
    runs = {name: tmp_path / name / "x" for name in ("ddp", "one")}
    for run in runs.values():
        run.parent.mkdir()
    ddp, one = ddp_beside_one(_args(tmp_path / "ddp", head, frozen, tiny_model, batch=PER_DEVICE), tmp_path / "ddp",
                              _args(tmp_path / "one", head, frozen, tiny_model, batch=WORLD * PER_DEVICE), devices=WORLD)
    for done in (ddp, one):
        assert done.returncode == 0, done.stderr[-3000:]
    # one run directory (beside the output directory's shared embedding cache)
    made = sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith("."))
    assert made == (["embedding-cache", "x"] if frozen else ["x"])
    assert json.loads((runs["ddp"] / "contrastlib_run.json").read_text())["status"] == "finished"
    ddp, one = train_losses(runs["ddp"]), train_losses(runs["one"])
    assert len(ddp) == len(one) == 3
    assert ddp == pytest.approx(one, abs=1e-5)
    a, b = _head(runs["ddp"]), _head(runs["one"])
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    if not frozen:  # the encoder trained, identically
        from safetensors.torch import load_file

        ea, eb = (load_file(r / "model" / "model.safetensors") for r in (runs["ddp"], runs["one"]))
        for k in eb:
            torch.testing.assert_close(ea[k], eb[k], atol=1e-5, rtol=0, msg=lambda m, k=k: f"{k}: {m}")
    if head == "bco":
        assert abs(float(b["delta"])) > 1e-4, "the shift never moved: the check would be empty"
