"""Image methods under DDP through the command users run: ``contrastlib fit simclr-digits
trainer.devices=2 trainer.strategy=ddp`` (Lightning's own strategy, 2 gloo processes on
CPU) against one process at twice the per-device batch.

BatchNorm makes each rank normalise its own rows, and torch's SyncBatchNorm (our
``trainer.sync_batchnorm``) runs on GPUs only; so the model here is a timm ViT (LayerNorm)
at 16 px with BatchNorm-free heads. With augmentations that draw nothing random the two
ranks together then see exactly the one-process batch, so:

* SimCLR: the NT-Xent negatives gathered from the other rank make the loss at every step,
  and the weights after it, those of the single process;
* MoCo v2: the keys of both ranks enter the queue in rank order, once per optimizer step,
  so queue, pointer, momentum encoder, losses and weights match the single process;
* the online probe gathers features and labels from both ranks: its weights match too.

Tolerance: SGD without momentum at lr 0.1 over 6 steps; the gradient all-reduce and the
gathered similarity rows differ from one process's sums by float32 reassociation
(~1e-7 relative): we assert 1e-4. A rank that saw only its own rows as negatives, or a
queue that missed the other rank's keys, moves the losses by far more (both were tried by
breaking the code: the test failed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests_helpers import ddp_beside_one, train_losses

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "datasets" / "digits" / "digits-train.npz"
PER_DEVICE, WORLD, LR = 4, 2, 0.1
VIT = ["model.name=vit_tiny_patch16_224", "model.img_size=16", "model.patch_size=4", "model.depth=2",
       "model.cifar_stem=false", "model.projection=[64,32]", "model.projection_batch_norm=false"]
FIXED_VIEWS = ["method.augment.size=16", "method.augment.min_scale=1.0", "method.augment.max_scale=1.0",
               "method.augment.hflip=0.0", "method.augment.jitter_prob=0.0", "method.augment.grayscale=0.0",
               "method.augment.blur_prob=0.0"]


def _args(out: Path, recipe: str, extra: list[str], *, batch: int) -> list[str]:
    return [
        "fit", recipe, f"output_dir={out}", "name=x", f"data.batch_size={batch}",
        "data.max_rows=24", *VIT, *FIXED_VIEWS,
        "optim.name=sgd", f"optim.lr={LR}", "optim.momentum=0.0", "optim.weight_decay=0.0", "optim.warmup_ratio=0.0",
        "optim.scheduler=constant", "trainer.precision=32-true", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "eval.knn=[]", "eval.linear=[]",
        "eval.every_n_epochs=null", "eval.projection=none", "method.online_probe=true", *extra,
    ]


def _state(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"], ckpt["callbacks"]


def _compare(tmp_path: Path, recipe: str, extra: list[str]) -> tuple[list[float], list[float], dict, dict, dict, dict]:
    ddp_out, one_out = tmp_path / "ddp", tmp_path / "one"
    ddp_out.mkdir()
    one_out.mkdir()
    ddp, one = ddp_beside_one(_args(ddp_out, recipe, extra, batch=PER_DEVICE), ddp_out,
                              _args(one_out, recipe, extra, batch=WORLD * PER_DEVICE), devices=WORLD)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    assert [p.name for p in ddp_out.iterdir() if not p.name.startswith(".")] == ["x"]  # one run directory
    w_ddp, cb_ddp = _state(ddp_out / "x")
    w_one, cb_one = _state(one_out / "x")
    return train_losses(ddp_out / "x"), train_losses(one_out / "x"), w_ddp, w_one, cb_ddp, cb_one


def _assert_same_run(losses_ddp, losses_one, w_ddp, w_one, cb_ddp, cb_one):
    assert len(losses_ddp) == len(losses_one) == 6  # 24 rows, global batch 8, 2 epochs
    for step, (a, b) in enumerate(zip(losses_ddp, losses_one, strict=True), start=1):
        assert a == pytest.approx(b, abs=1e-4), f"step {step}: {a} vs {b}"
    assert losses_one[0] != pytest.approx(losses_one[-1], abs=1e-3)  # training moved: the comparison means something
    for k, v in w_one.items():
        if v.is_floating_point() and not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(w_ddp[k], v, atol=1e-4, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
    probe = next(k for k in cb_one if k.startswith("OnlineProbe"))
    torch.testing.assert_close(cb_ddp[probe]["head"]["weight"], cb_one[probe]["head"]["weight"], atol=1e-4, rtol=1e-4)


# With -m slow: MoCo v2's DDP test below runs the same image pipeline under DDP (views,
# sharded batches, the gathered loss) and more (the queue, shuffle-BN); NT-Xent's gather
# equals one process in tests/losses/test_distributed.py.
@pytest.mark.slow
def test_simclr_two_ranks_equal_one_process_at_double_batch(tmp_path):
    _assert_same_run(*_compare(tmp_path, "simclr-digits", []))


def test_moco_v2_two_ranks_equal_one_process_at_double_batch(tmp_path):
    """A 16-key queue wraps within the run: its contents and pointer must match too.
    Shuffle-BN is forced on: without BatchNorm it must change nothing, so the keys put
    back in order after the shuffled pass across ranks are checked here too."""
    out = _compare(tmp_path, "moco-digits", ["method.version=2", "method.queue_size=16", "method.key_momentum=0.9",
                                             "method.shuffle_bn=true"])
    _assert_same_run(*out)
    w_ddp, w_one = out[2], out[3]
    assert int(w_ddp["queue_ptr"]) == int(w_one["queue_ptr"]) == (6 * 8) % 16
    torch.testing.assert_close(w_ddp["queue"], w_one["queue"], atol=1e-4, rtol=1e-4)
    assert any(k.startswith("momentum_encoder.") for k in w_one)
