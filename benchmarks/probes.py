"""The measured programs of the benchmark, each run as its own process by `run.py`.

    python benchmarks/probes.py floor DATA --image-size 224 --batch-size 32
    python benchmarks/probes.py textbook DATA --image-size 224 --epochs 5
    python benchmarks/probes.py plain-loop DATA --image-size 128 --batch-size 32 --epochs 2
    python benchmarks/probes.py predict ZOO NAME IMAGE... [--repeats 50]

Each prints one JSON line. The baselines are written the way the tutorials write them, using the
same timm model, the same bundled weights and the same input pipeline settings as ours; they do
not import `transfer` (only `zoo.weights`, to get the same weights file).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from PIL import Image

ARCH = "tf_efficientnet_lite0"


def pretrained_backbone(num_classes: int = 0):
    """lite0 with the bundled ImageNet weights (the same file our fits use), as a stock timm model."""
    from zoo.catalog import resolve_weights

    weights = resolve_weights(ARCH)
    return timm.create_model(ARCH, pretrained=True, num_classes=num_classes,
                             pretrained_cfg_overlay=dict(file=str(weights.file)))


def eval_transform(model, image_size: int):
    config = timm.data.resolve_model_data_config(model)
    config["input_size"] = (3, image_size, image_size)
    return timm.data.create_transform(**config, is_training=False)


def floor(data: Path, image_size: int, batch_size: int) -> dict:
    """The hard floor of a frozen strategy: decode every image once, one batched forward pass."""
    started = time.perf_counter()
    model = pretrained_backbone().eval().to(memory_format=torch.channels_last)
    transform = eval_transform(model, image_size)
    paths = sorted(p for p in data.rglob("*") if p.suffix == ".png")
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[i:i + batch_size]])
            model(batch.contiguous(memory_format=torch.channels_last))
    return {"images": len(paths), "seconds_in_process": time.perf_counter() - started}


def textbook(data: Path, image_size: int, epochs: int, batch_size: int = 32) -> dict:
    """The usual feature-extractor loop: frozen backbone in eval mode, a forward pass every epoch,
    a Linear head, AdamW 1e-3, batch 32."""
    from torchvision.datasets import ImageFolder

    started = time.perf_counter()
    backbone = pretrained_backbone().eval().to(memory_format=torch.channels_last)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    transform = eval_transform(backbone, image_size)
    train = ImageFolder(data / "train", transform=transform)
    val = ImageFolder(data / "val", transform=transform)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True)
    head = torch.nn.Linear(backbone.num_features, len(train.classes))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    for _ in range(epochs):
        for images, labels in loader:
            with torch.no_grad():
                features = backbone(images.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(head(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    correct = 0
    with torch.no_grad():
        for images, labels in torch.utils.data.DataLoader(val, batch_size=batch_size):
            correct += (head(backbone(images.contiguous(memory_format=torch.channels_last))).argmax(1) == labels).sum().item()
    return {"accuracy": correct / len(val), "seconds_in_process": time.perf_counter() - started}


def plain_loop(data: Path, image_size: int, batch_size: int, epochs: int) -> dict:
    """A plain PyTorch fine-tuning loop over the same timm model: AdamW, timm's training transform,
    channels-last. Reports training images per second (optimizer steps only, like ours)."""
    from torchvision.datasets import ImageFolder

    model = pretrained_backbone(num_classes=10).to(memory_format=torch.channels_last)
    config = timm.data.resolve_model_data_config(model)
    config["input_size"] = (3, image_size, image_size)
    transform = timm.data.create_transform(**config, is_training=True)
    train = ImageFolder(data / "train", transform=transform)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    model.train()
    rates = []
    for _ in range(epochs):
        seen, started = 0, time.perf_counter()
        for images, labels in loader:
            loss = F.cross_entropy(model(images.contiguous(memory_format=torch.channels_last)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(images)
        rates.append(seen / (time.perf_counter() - started))
    return {"train_images_per_second": rates, "best": max(rates)}


def predict_latency(zoo: Path, name: str, images: list[str], repeats: int) -> dict:
    """Single-image latency (model already loaded) and batch throughput through zoo.predict."""
    from zoo.predict import ModelCache, predict

    cache = ModelCache()
    loaded = cache.get(name, zoo=zoo)
    predict(loaded, images[:1])  # warm-up
    latencies = []
    for i in range(repeats):
        started = time.perf_counter()
        predict(loaded, [images[i % len(images)]], top_k=5)
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    batch = (images * (64 // len(images) + 1))[:64]
    started = time.perf_counter()
    predict(loaded, batch, top_k=5)
    batch_seconds = time.perf_counter() - started
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "batch_images_per_second": len(batch) / batch_seconds,
        "image_size": loaded.spec.image_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("floor", "textbook", "plain-loop"):
        command = commands.add_parser(name)
        command.add_argument("data", type=Path)
        command.add_argument("--image-size", type=int, default=224)
        command.add_argument("--batch-size", type=int, default=32)
        command.add_argument("--epochs", type=int, default=5)
    predict = commands.add_parser("predict")
    predict.add_argument("zoo", type=Path)
    predict.add_argument("name")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if args.command == "floor":
        result = floor(args.data, args.image_size, args.batch_size)
    elif args.command == "textbook":
        result = textbook(args.data, args.image_size, args.epochs, args.batch_size)
    elif args.command == "plain-loop":
        result = plain_loop(args.data, args.image_size, args.batch_size, args.epochs)
    else:
        result = predict_latency(args.zoo, args.name, args.images, args.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
