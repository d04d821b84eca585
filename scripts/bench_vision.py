"""SimCLR and MoCo v2: ``contrastlib fit`` against lightly's implementations, side by side.

One run sized for a 2-core CPU: a class-balanced 10,000-image slice of CIFAR-10's
training set (every 5th image of each class) from ``cifar10-jpeg.zip``, decoded once into
an array that both sides read, and all 10,000 test images for kNN.

Both sides get the same recipe:

* backbone: timm ``resnet18`` with the CIFAR stem (3x3 stride-1 convolution, no max pool);
* projection head 512 -> 512 (BatchNorm, ReLU) -> 128, the same layers on both sides
  (lightly's own ``ProjectionHead`` class on its side, with that layout);
* augmentations: lightly's ``SimCLRTransform`` / ``MoCoV2Transform`` at 32 px without blur
  on its side, our ``simclr`` / ``mocov2`` recipes at 32 px (blur off below 64 px) on ours:
  the same crops, flips, jitter and grey;
* batch 128, SGD (lr 0.06 x 128 / 256, momentum 0.9, weight decay 5e-4 off biases and
  norms on both sides), a cosine schedule without warm-up, temperature 0.2;
* MoCo v2: a 4,096-key queue (lightly's ``NTXentLoss(memory_bank_size=...)``) and key
  momentum 0.99;
* the same torch threads (2), data loading in the main process on both sides, Lightning's
  Trainer with the same precision setting.

Each case is a fresh process. Its ``trainer.fit`` wall time divided by the epochs is the
figure (data loading and augmentation included). Ours runs the path users run
(``contrastlib.pipeline.fit``, writing a run directory); lightly's is the module from its
examples. kNN: both backbones' features through the same evaluator (lightly's protocol,
k 200, T 0.1, cosine) from the 10,000 training images to the 10,000 test images. Floors:
raw pixels and a random-init ResNet-18.

    python scripts/bench_vision.py --zip ../shared/data/images/cifar10/cifar10-jpeg.zip \\
        --out bench_out/vision.json

Cases already in ``--out`` are skipped (a killed run resumes); ``--cases`` picks some.
Smoke run (seconds): ``--train-images 256 --test-images 256 --epochs 1``.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import in_child, peak_rss_mb

from contrastlib.utils.io import write_json

BATCH, TEMPERATURE, QUEUE, KEY_MOMENTUM = 128, 0.2, 4096, 0.99
WEIGHT_DECAY, SGD_MOMENTUM = 5e-4, 0.9
CASES = [f"{side}-{method}-{precision}" for method in ("simclr", "moco") for side in ("lightly", "ours")
         for precision in ("fp32", "bf16")]
PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}
#: lightly's SimCLRTransform / MoCoV2Transform defaults at 32 px without blur, as our fields.
_COMMON = {"size": 32, "max_scale": 1.0, "hflip": 0.5, "jitter_prob": 0.8, "jitter_strength": 1.0, "grayscale": 0.2,
           "blur_prob": 0.0}
AUGMENT = {
    "simclr": {"recipe": "simclr", **_COMMON, "min_scale": 0.08, "brightness": 0.8, "contrast": 0.8, "saturation": 0.8,
               "hue": 0.2},
    "moco": {"recipe": "mocov2", **_COMMON, "min_scale": 0.2, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
             "hue": 0.1},
}


# ---------------------------------------------------------------------------- data
def slice_arrays(zip_path: str, n_train: int, n_test: int, folder: Path) -> tuple[Path, Path]:
    """Class-balanced slices of the zip's train and test sets as .npz (uint8 NHWC).
    ``zip_path`` ``synthetic``: seeded random pixels and labels, for timing only."""
    import numpy as np

    from contrastlib.data.images import read_images

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        path = folder / f"cifar10-{split}-{n}{'-synthetic' if zip_path == 'synthetic' else ''}.npz"
        out.append(path)
        if path.is_file():
            continue
        if zip_path == "synthetic":
            rng = np.random.default_rng(0)
            np.savez(path, images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                     labels=np.arange(n) % 10)
            continue
        images = read_images(f"{zip_path}:{split}")
        labels = np.asarray(images.labels)
        per_class = n // len(images.classes or [])
        rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:: max(1, int((labels == c).sum()) // per_class)][:per_class]
                                       for c in np.unique(labels)]))
        x = np.stack([np.asarray(images.image(int(i)).convert("RGB")) for i in rows])
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=x, labels=labels[rows])
        tmp.rename(path)
    return out[0], out[1]


def backbone() -> Any:
    import timm

    from contrastlib.encoders.image import _cifar_stem

    model = timm.create_model("resnet18", num_classes=0)
    _cifar_stem(model, "resnet18")
    return model


# ---------------------------------------------------------------------------- lightly
def lightly_case(method: str, precision: str, train_npz: str, epochs: int, r: dict[str, Any], q: Any) -> None:
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules.heads import ProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import MoCoV2Transform, SimCLRTransform
    from PIL import Image
    from torch import nn

    from contrastlib.training.optim import adamw_param_groups

    torch.set_num_threads(r["threads"])
    # DataLoader workers fork, as in a user's script (this case runs in a spawned child, whose default is spawn)
    multiprocessing.set_start_method("fork", force=True)
    pl.seed_everything(0, verbose=False)
    arrays = np.load(train_npz)
    x, y = arrays["images"], arrays["labels"]
    transform = (SimCLRTransform if method == "simclr" else MoCoV2Transform)(input_size=32, gaussian_blur=0.0)

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(x)

        def __getitem__(self, i: int) -> Any:
            return transform(Image.fromarray(x[i])), int(y[i])

    def head() -> nn.Module:
        return ProjectionHead([(512, 512, nn.BatchNorm1d(512), nn.ReLU()), (512, 128, None, None)])

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.projection_head = backbone(), head()
            if method == "moco":
                self.backbone_momentum = copy.deepcopy(self.backbone)
                self.projection_head_momentum = copy.deepcopy(self.projection_head)
                deactivate_requires_grad(self.backbone_momentum)
                deactivate_requires_grad(self.projection_head_momentum)
                self.criterion = NTXentLoss(temperature=r["temperature"], memory_bank_size=(QUEUE, 128))
            else:
                self.criterion = NTXentLoss(temperature=r["temperature"])

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x0, x1), _ = batch
            if method == "simclr":
                loss = self.criterion(self.projection_head(self.backbone(x0)), self.projection_head(self.backbone(x1)))
            else:
                update_momentum(self.backbone, self.backbone_momentum, m=KEY_MOMENTUM)
                update_momentum(self.projection_head, self.projection_head_momentum, m=KEY_MOMENTUM)
                query = self.projection_head(self.backbone(x0))
                key = self.projection_head_momentum(self.backbone_momentum(x1)).detach()
                loss = self.criterion(query, key)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(adamw_param_groups(self, WEIGHT_DECAY), lr=r["lr"], momentum=SGD_MOMENTUM)
            steps = int(self.trainer.estimated_stepping_batches)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
                                                       "interval": "step"}}

    loader = torch.utils.data.DataLoader(Data(), batch_size=r["batch"], shuffle=True, drop_last=True,
                                         num_workers=r["workers"], persistent_workers=r["workers"] > 0)
    module = Module()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(max_epochs=epochs, precision=PRECISION[precision], accelerator=r["accelerator"], devices=1,  # type: ignore[arg-type]
                             logger=pl.loggers.CSVLogger(tmp), enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        start = time.perf_counter()
        trainer.fit(module, loader)
        seconds = time.perf_counter() - start
        weights = str(Path(tempfile.gettempdir()) / f"bench_vision_{method}_{precision}_{os.getpid()}.pt")
        torch.save(module.backbone.state_dict(), weights)
    q.put({"seconds": seconds, "steps": int(trainer.global_step), "peak_rss_mb": peak_rss_mb(), "weights": weights,
           "loss": float(trainer.callback_metrics.get("train/loss", float("nan")))})


# ---------------------------------------------------------------------------- ours
def ours_case(method: str, precision: str, train_npz: str, epochs: int, r: dict[str, Any], q: Any) -> None:
    import torch

    from contrastlib.config.load import load_config
    from contrastlib.pipeline import fit

    torch.set_num_threads(r["threads"])
    # DataLoader workers fork, as in a user's script (this case runs in a spawned child, whose default is spawn)
    multiprocessing.set_start_method("fork", force=True)
    recipe = "simclr-digits" if method == "simclr" else "moco-digits"
    overrides = [
        f"data.train={train_npz}", f"data.batch_size={r['batch']}", f"data.num_workers={r['workers']}",
        "data.drop_last=true", f"trainer.accelerator={r['accelerator']}",
        "model.name=resnet18", "model.cifar_stem=true", "model.projection=[512,128]",
        # every field spelled out: the digits recipes' own augment keys must not leak in
        *(f"method.augment.{k}={v}" for k, v in AUGMENT[method].items()),
        f"loss.temperature={r['temperature']}",
        "optim.name=sgd", f"optim.lr={r['lr']}", f"optim.momentum={SGD_MOMENTUM}", f"optim.weight_decay={WEIGHT_DECAY}",
        "optim.warmup_ratio=0.0", "optim.scheduler=cosine",
        f"trainer.max_epochs={epochs}", f"trainer.precision={PRECISION[precision]}", "trainer.enable_progress_bar=false",
        "trainer.checkpoint_every_n_steps=100000",
        "eval.knn=[]", "eval.linear=[]", "eval.every_n_epochs=null", "method.online_probe=false", "eval.projection=none",
        "seed=0",
    ]
    if method == "moco":
        overrides += ["method.version=2", f"method.queue_size={QUEUE}", f"method.key_momentum={KEY_MOMENTUM}"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(recipe, [*overrides, f"output_dir={tmp}", "name=bench"])
        result = fit(cfg, log=lambda *_: None)
        weights = str(Path(tempfile.gettempdir()) / f"bench_vision_ours_{method}_{precision}_{os.getpid()}.pt")
        from safetensors.torch import load_file

        state = load_file(str(result.run_dir / "model" / "encoder.safetensors"))
        torch.save({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}, weights)
    q.put({"seconds": result.seconds, "steps": result.steps, "peak_rss_mb": peak_rss_mb(), "weights": weights})


# ---------------------------------------------------------------------------- kNN
def knn_case(weights: str | None, train_npz: str, test_npz: str, r: dict[str, Any], q: Any) -> None:
    import torch

    from contrastlib.data.images import read_images
    from contrastlib.encoders.image import PixelEncoder, embed_images, knn_classify

    torch.set_num_threads(r["threads"])
    device = "cuda" if r["accelerator"] == "gpu" else "cpu"
    if weights == "pixels":
        encoder: Any = PixelEncoder()
    else:
        torch.manual_seed(0)  # the random-init floor is the same network in every run
        encoder = backbone()
        if weights:
            encoder.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        encoder = encoder.to(device)
    start = time.perf_counter()
    kw = {"size": 32, "batch_size": 512, "precision": "fp32"}  # no workers: the evaluation transform is cheap
    tr, ytr = embed_images(encoder, read_images(train_npz), **kw)
    te, yte = embed_images(encoder, read_images(test_npz), **kw)
    out: dict[str, Any] = {}
    try:  # ours, neighbours from the FAISS index layer
        res = knn_classify(tr, ytr, te, yte, k=200, temperature=0.1)
        out.update(top1=res.top1, top5=res.top5)
    except ImportError as e:  # a machine without faiss (the GPU image): lightly's evaluator alone
        out.update(top1=None, top1_error=str(e))
    # lightly's own evaluator (torch, cosine, k 200, T 0.1): the protocol of its published table
    from lightly.utils.benchmarking import knn_predict

    def unit(a: Any) -> Any:
        return torch.nn.functional.normalize(torch.as_tensor(a, device=device), dim=1)

    bank, labels = unit(tr).T.contiguous(), torch.as_tensor(ytr, device=device).long()
    hits = sum(int((knn_predict(unit(te[i:i + 1000]), bank, labels, 10, 200, 0.1)[:, 0].cpu()
                    == torch.as_tensor(yte[i:i + 1000])).sum()) for i in range(0, len(te), 1000))
    out.update(top1_lightly_knn=hits / len(te), knn_seconds=time.perf_counter() - start)
    q.put(out)


# ---------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zip", default="../shared/data/images/cifar10/cifar10-jpeg.zip")
    p.add_argument("--out", default="bench_out/vision.json")
    p.add_argument("--work", default="bench_out/vision-data", help="where the decoded slices are kept")
    p.add_argument("--train-images", type=int, default=10_000)
    p.add_argument("--test-images", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--temperature", type=float, default=TEMPERATURE)
    p.add_argument("--lr", type=float, default=0.0, help="0: 0.06 x batch / 256")
    p.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers, both sides")
    p.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    p.add_argument("--cases", nargs="*", default=[*CASES, "floor-pixels", "floor-random"])
    a = p.parse_args()
    unknown = sorted(set(a.cases) - {*CASES, "floor-pixels", "floor-random"})
    if unknown:
        p.error(f"unknown case {unknown[0]!r}")
    out = Path(a.out)
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    recipe = {"batch": a.batch, "temperature": a.temperature, "lr": a.lr or 0.06 * a.batch / 256,
              "accelerator": a.accelerator, "workers": a.workers, "threads": a.threads}
    settings = {"train_images": a.train_images, "test_images": a.test_images, "epochs": a.epochs, "batch": a.batch}
    if recipe != {"batch": BATCH, "temperature": TEMPERATURE, "lr": 0.06 * BATCH / 256, "accelerator": "cpu",
                  "workers": 0, "threads": 2}:
        settings["recipe"] = recipe  # the defaults keep the settings of runs recorded before these options
    if a.zip == "synthetic":
        settings["data"] = "synthetic"
    if results.get("settings", settings) != settings:
        p.error(f"{out} holds a run with other settings {results['settings']}; use another --out")
    results["settings"] = settings
    train_npz, test_npz = slice_arrays(a.zip, a.train_images, a.test_images, Path(a.work).resolve())
    import torch

    results["env"] = {"torch": torch.__version__, "cpus": os.cpu_count(),
                      "lightly": __import__("lightly").__version__,
                      "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for case in a.cases:
        if case in results:
            print(f"{case}: done before, skipped")
            continue
        if case.startswith("floor-"):
            r = in_child(knn_case, "pixels" if case == "floor-pixels" else None, str(train_npz), str(test_npz), recipe)
        else:
            side, method, precision = case.split("-")
            fn = lightly_case if side == "lightly" else ours_case
            r = in_child(fn, method, precision, str(train_npz), a.epochs, recipe)
            r["seconds_per_epoch"] = r["seconds"] / a.epochs
            results[case] = r  # the training figures are kept even if the evaluation dies
            write_json(out, results)
            try:
                r.update(in_child(knn_case, r.pop("weights"), str(train_npz), str(test_npz), recipe))
            except RuntimeError as e:
                r["knn_error"] = str(e)
        results[case] = r
        print(case, json.dumps(r), flush=True)
        write_json(out, results)
    ratios: dict[str, Any] = {}
    for method in ("simclr", "moco"):
        def sec(case: str) -> float | None:
            return results.get(case, {}).get("seconds_per_epoch")

        for label, ours, theirs in (("fp32 vs fp32 (equal precision)", "fp32", "fp32"),
                                    ("bf16 vs bf16 (equal precision)", "bf16", "bf16"),
                                    ("ours auto (bf16) vs lightly's default (fp32)", "bf16", "fp32")):
            a_, b_ = sec(f"ours-{method}-{ours}"), sec(f"lightly-{method}-{theirs}")
            if a_ and b_:
                ratios[f"{method}: {label}"] = round(b_ / a_, 3)
    results["speedup"] = ratios
    write_json(out, results)
    print(json.dumps(ratios, indent=1))


if __name__ == "__main__":
    main()
