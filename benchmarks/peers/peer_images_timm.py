"""The peer for image classification: timm's efficientnet_lite0 from the same weights, trained with
the same two phases as keras-zoo's image recipe:
- phase 1: the new head (dropout 0.2) on the frozen backbone, 4 epochs at peak 1e-3;
- phase 2: the whole network, 8 epochs at peak 1e-4, BatchNorm kept in inference mode;
each with AdamW (weight decay 0.05, none on biases and norms), 10% linear warm-up then linear
decay, gradient clipping at norm 1.0, label smoothing 0.1, batch 32. Training images: random
resized crop (area 0.25-1) to 224 and horizontal flip; evaluation: resize to 256, centre crop 224.
Like keras-zoo, every image is decoded and resized once into memory (256 x 256) before training.
Prints examples/s per epoch (training batches only) and validation accuracy after the last epoch.

Usage: python peer_images_timm.py MODEL_DIR TRAIN_DIR VAL_DIR [head_epochs=4] [epochs=8] [batch=32]
Env: BF16=1 autocast bfloat16 on CPU; THREADS=n torch threads (default: all cores).
Runs in the peer virtualenv that benchmarks/peers.py makes (torch, timm), never in make test.
"""
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torchvision.transforms import v2

model_dir, train_dir, val_dir = sys.argv[1:4]
head_epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 4
epochs = int(sys.argv[5]) if len(sys.argv) > 5 else 8
B = int(sys.argv[6]) if len(sys.argv) > 6 else 32
if os.environ.get("THREADS"):
    torch.set_num_threads(int(os.environ["THREADS"]))
bf16 = os.environ.get("BF16") == "1"
torch.manual_seed(42); random.seed(42)

classes = sorted(p.name for p in Path(train_dir).iterdir() if p.is_dir())


def load(root):
    images, labels = [], []
    for k, name in enumerate(classes):
        for path in sorted((Path(root) / name).iterdir()):
            try:
                image = Image.open(path).convert("RGB").resize((256, 256), Image.BICUBIC)
            except OSError:
                continue
            images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)); labels.append(k)
    return torch.stack(images), torch.tensor(labels)


train_x, train_y = load(train_dir)
val_x, val_y = load(val_dir)
model = timm.create_model("efficientnet_lite0", pretrained=True, num_classes=len(classes), drop_rate=0.2,
                          pretrained_cfg_overlay={"file": str(Path(model_dir) / "model.safetensors")})
normalise = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])
augment = v2.Compose([v2.RandomResizedCrop(224, scale=(0.25, 1.0), antialias=True), v2.RandomHorizontalFlip()])
loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)


def optimizer(params, lr, steps):
    decay = [p for n, p in params if p.ndim > 1]
    no_decay = [p for n, p in params if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = round(0.1 * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(s / max(warmup, 1), (steps - s) / max(steps - warmup, 1)))
    return opt, sched


def train_phase(n_epochs, lr, head_only):
    for p in model.parameters():
        p.requires_grad = not head_only
    for p in model.get_classifier().parameters():
        p.requires_grad = True
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt, sched = optimizer(params, lr, n_epochs * math.ceil(len(train_y) / B))
    for ep in range(n_epochs):
        model.train()
        for m in model.modules():  # BatchNorm in inference mode in both phases (keras-zoo's default)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        order = torch.randperm(len(train_y)); t = time.perf_counter(); n = 0
        for k in range(0, len(order), B):
            b = order[k:k + B]
            x = torch.stack([normalise(augment(train_x[i])) for i in b]); y = train_y[b]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
            opt.step(); sched.step(); opt.zero_grad(); n += len(b)
        dt = time.perf_counter() - t
        print(f"{'head' if head_only else 'finetune'} epoch {ep + 1}: {n / dt:.1f} examples/s ({dt:.0f} s)", flush=True)


train_phase(head_epochs, 1e-3, head_only=True)
train_phase(epochs, 1e-4, head_only=False)
model.eval(); correct = 0
t = time.perf_counter()
with torch.no_grad():
    for k in range(0, len(val_y), 64):
        x = normalise(v2.functional.center_crop(val_x[k:k + 64], [224, 224]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            correct += int((model(x).argmax(-1) == val_y[k:k + 64]).sum())
print(f"validation accuracy {100 * correct / len(val_y):.2f} ({len(val_y)} images, inference "
      f"{len(val_y) / (time.perf_counter() - t):.0f}/s)")
print(f"RESULT peer_timm bf16={int(bf16)} head_epochs={head_epochs} epochs={epochs}")
