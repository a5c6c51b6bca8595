"""Search for a CPU setting where the scan carries the task (issue: orderings that matter).

Trains candidate (model, data, schedule) settings directly (no Hydra, to keep the search loop short) and reports,
on the VALIDATION split only: top-1, top-1 with every scan ablated (D skip only), top-1 when the trained model is
scanned with other orderings, and the training time. The chosen setting is then run for real with
`python train.py experiment=long_range`, whose test split was never looked at here.

    python experiments/long_range/search.py "NAME:key=value;key=value" [...] --seed S --out search.jsonl

search_log.jsonl holds the completed runs of the search (README: "Which setting shows ordering effects").
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from patchorder.data import shapes_generator as gen
from patchorder.models import VMamba, scan_ablation

SWAPS = ("random", "spiral", "column_major", "diagonal")


BASE = dict(
    model=dict(depths=[2, 2], dims=32, d_state=1, ssm_ratio=1.0, mlp_ratio=4.0, scan_scheme="single",
               drop_path_rate=0.0),
    data=dict(task="direction", difficulty="medium", image_size=64, train_per_class=1000, val_per_class=200),
    epochs=6, lr=2e-3, batch=64, weight_decay=0.05, warmup=1,
)


def candidate(spec: str) -> dict:
    """``name:key=value;key=value`` with dotted keys into BASE, e.g. ``a:model.d_state=4;model.depths=[2,4]``."""
    name, _, assignments = spec.partition(":")
    setting = json.loads(json.dumps(BASE))
    for assignment in filter(None, assignments.split(";")):
        key, value = assignment.split("=")
        *path, leaf = key.split(".")
        target = setting
        for part in path:
            target = target[part]
        target[leaf] = json.loads(value) if value[:1] in "[{0123456789-" or value in ("true", "false") else value
    setting["name"] = name
    return setting


def make_split(data: dict, split: str, seed: int):
    per_class = data["train_per_class"] if split == "train" else data["val_per_class"]
    side = data["image_size"]
    images, labels, _ = gen.generate(per_class, (side, side), data["task"], data["difficulty"], seed=seed)
    return torch.from_numpy(images).float().div_(255), torch.from_numpy(labels)


def accuracy(model, images, labels, batch=256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch):
            correct += (model(images[start:start + batch]).argmax(1) == labels[start:start + batch]).sum().item()
    return correct / len(images)


def run(setting: dict, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    data = setting["data"]
    x_train, y_train = make_split(data, "train", 1)
    print(setting, flush=True)
    x_val, y_val = make_split(data, "val", 2)  # never the test split
    mean, std = x_train.mean((0, 2, 3), keepdim=True), x_train.std((0, 2, 3), keepdim=True)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    num_classes = int(y_train.max()) + 1
    model_args = dict(setting["model"])
    # The probes that led to init="scan_ready" (= "mamba" with xproj_scale 8): "mamba" resets SS2D's in_proj and
    # out_proj to nn.Linear's default init; xproj_scale multiplies x_proj.
    probe_mamba = model_args.get("init") == "mamba"
    if probe_mamba:
        model_args["init"] = "vmamba"
    model = VMamba(num_classes=num_classes, ordering="row_major", scan_backend="torch", **model_args)
    with torch.no_grad():
        for op in model.ss2d_blocks():
            if probe_mamba:
                op.in_proj.reset_parameters()
                op.out_proj.reset_parameters()
            op.x_proj_weight.mul_(setting.get("xproj_scale", 1.0))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not getattr(p, "_no_weight_decay", False)]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not getattr(p, "_no_weight_decay", False))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": setting["weight_decay"]},
                                   {"params": rest, "weight_decay": 0.0}], lr=setting["lr"])
    steps_per_epoch = math.ceil(len(x_train) / setting["batch"])
    total, warmup = setting["epochs"] * steps_per_epoch, setting["warmup"] * steps_per_epoch

    def lr_at(step):
        if step < warmup:
            return 1e-3 + (1 - 1e-3) * step / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 1e-2 + (1 - 1e-2) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(seed)
    started = time.time()
    curve = []
    for epoch in range(setting["epochs"]):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        losses = []
        for start in range(0, len(order), setting["batch"]):
            idx = order[start:start + setting["batch"]]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        curve.append((round(float(np.mean(losses)), 4), round(accuracy(model, x_val, y_val), 4)))
        print(setting["name"], "epoch", epoch, curve[-1], f"{time.time() - started:.0f}s", flush=True)
    train_seconds = time.time() - started
    result = {"name": setting["name"], "setting": setting, "seed": seed, "train_seconds": round(train_seconds, 1),
              "curve": curve, "val_acc1": accuracy(model, x_val, y_val)}
    with scan_ablation(model):
        result["val_acc1_scan_ablated"] = accuracy(model, x_val, y_val)
    for name in SWAPS:
        model.set_ordering(name)
        result[f"val_acc1_{name}"] = accuracy(model, x_val, y_val)
    model.set_ordering("row_major")
    result["params"] = sum(p.numel() for p in model.parameters())
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="+")
    parser.add_argument("--out", default="search.jsonl")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and batch order (not the data)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.names:
        result = run(candidate(name), seed=args.seed)
        print(json.dumps({k: v for k, v in result.items() if k != "setting"}), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
