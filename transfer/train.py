"""Training a whole network on images: fine-tune (after its head warm-up) and from-scratch.

`train_network` reads top to bottom in labelled stages: setup, then per epoch `# train` (checking
the stop flag and the time budget every batch), `# evaluate` on validation data, `# keep the best`
(early stopping restores the best epoch; the starting point counts too, so training never ends
worse than the warmed-up head), `# report` through the progress callback.

The optimiser is AdamW over timm's layer-decay parameter groups (`layer_decay=0.85` on fine-tune:
each depth group learns 0.85x as fast as the one above it, so the stem of lite0 gets about 1/16 of
the head's rate) and the schedule timm's cosine scheduler, which is what applies those per-group
scales. Augmentation is timm's training transform; tensors are channels-last; the loss is
class-weighted cross-entropy. Heads on cached features are `transfer.heads`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from transfer.heads import drop_modalities
from transfer.progress import Progress, Run
from zoo.model import ModelSpec, center_crop_uint8, count_parameters, normalize

log = logging.getLogger(__name__)


@dataclass
class NetworkConfig:
    epochs: int = 6  # passes over the training images
    batch_size: int = 32
    lr: float = 1e-3  # head's peak LR; other groups scaled by layer_decay
    layer_decay: float | None = None  # None: one LR for all
    weight_decay: float = 0.05
    warmup_epochs: float = 0.0  # linear warm-up, in epochs
    patience: int = 3  # epochs without improvement before stopping
    label_smoothing: float = 0.1
    augment_scale: tuple[float, float] = (0.5, 1.0)  # RandomResizedCrop area range (mild: short runs)
    hflip: float = 0.5  # probability of a horizontal flip
    color_jitter: float = 0.2
    freeze_bn_stats: bool = False  # BatchNorm keeps its pretrained statistics (small-data fine-tuning)


def train_network(
    model: torch.nn.Module,
    train_images: Sequence[Image.Image],
    train_y: torch.Tensor,
    val_crops: torch.Tensor,
    val_y: torch.Tensor,
    *,
    spec: ModelSpec,
    config: NetworkConfig,
    class_weights: Sequence[float] | None = None,
    run: Run | None = None,
    train_text=None,
    val_text=None,
) -> list[dict[str, Any]]:
    """Train every trainable parameter of `model` in place; the best epoch's weights are restored.

    train_text / val_text: `zoo.text.TextInputs` aligned with the images, for image+text models
    (trained with modality dropout)."""
    from timm.data import create_transform

    run = run or Run()
    # setup
    trainable, total = count_parameters(model)
    log.info("training %s of %s parameters (%.1f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    model.to(memory_format=torch.channels_last)
    transform = create_transform(
        input_size=spec.image_size, is_training=True, scale=config.augment_scale, hflip=config.hflip,
        color_jitter=config.color_jitter,
        interpolation=spec.interpolation, mean=spec.mean, std=spec.std,
        use_prefetcher=True,  # -> uint8 tensors; normalised per batch exactly like evaluation
    )
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    optimizer, scheduler = make_optimizer(model, config, steps_per_epoch)
    weights = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    generator = torch.Generator().manual_seed(0)
    step, total_steps, started = 0, steps_per_epoch * config.epochs, time.monotonic()
    # the starting point is a candidate too: training must not end worse than the warmed-up head
    best, best_state, since_best, history = None, None, 0, []

    def evaluate_and_keep(epoch: int, train_loss: float | None, train_images_per_second: float | None = None) -> None:
        nonlocal best, best_state, since_best
        val_logits = predict_logits(model, val_crops, spec, text=val_text)
        val_loss = F.cross_entropy(val_logits, val_y).item()
        val_accuracy = (val_logits.argmax(1) == val_y).float().mean().item()
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy,
                  "seconds": round(time.monotonic() - started, 2), "train_images_per_second": train_images_per_second}
        history.append(record)
        score = (val_accuracy, -val_loss)  # higher accuracy, then lower loss
        if best is None or score > best:
            best, best_state, since_best = score, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        run.report(Progress("epoch", epoch, config.epochs, epoch=epoch,
                            metrics={k: v for k, v in record.items() if k in ("train_loss", "val_loss", "val_accuracy") and v is not None}))

    evaluate_and_keep(0, None)
    for epoch in range(1, config.epochs + 1):
        # train
        model.train()
        if config.freeze_bn_stats:
            _batchnorm_eval(model)
        order = torch.randperm(len(train_images), generator=generator).tolist()
        running_loss, seen, stopped, epoch_started = 0.0, 0, False, time.monotonic()
        for start in range(0, len(order), config.batch_size):
            if run.check():
                stopped = True
                break
            batch = order[start:start + config.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a batch of one
                continue
            inputs = normalize(torch.stack([transform(train_images[i]) for i in batch]), spec)
            if train_text is None:
                logits = model(inputs)
            else:
                image_present, text = drop_modalities(train_text.select(batch), generator)
                logits = model(inputs, text, image_present=image_present)
            loss = F.cross_entropy(logits, train_y[batch], weight=weights, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            running_loss += loss.item() * len(batch)
            seen += len(batch)
            elapsed = time.monotonic() - started
            run.report(Progress("train", step, total_steps, epoch=epoch,
                                metrics={"train_loss": running_loss / seen},
                                eta_seconds=elapsed / step * (total_steps - step)))
        if seen == 0:
            break
        # evaluate, keep the best
        evaluate_and_keep(epoch, running_loss / seen, round(seen / (time.monotonic() - epoch_started), 2))
        # termination
        if stopped or since_best >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def make_optimizer(model: torch.nn.Module, config: NetworkConfig, steps_per_epoch: int):
    """AdamW over timm's layer-decay parameter groups, and timm's cosine schedule stepped per batch.

    The scheduler must be timm's: it is what multiplies each group's rate by its `lr_scale`
    (a torch scheduler would silently train every layer at the head's rate).
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    group_fn = _fusion_layer_decay_groups(config) if config.layer_decay and hasattr(model, "fuse") else None
    optimizer = create_optimizer_v2(model, opt="adamw", lr=config.lr, weight_decay=config.weight_decay,
                                    layer_decay=config.layer_decay, param_group_fn=group_fn)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=config.epochs, min_lr=config.lr * 0.01,
        warmup_epochs=math.ceil(config.warmup_epochs), warmup_lr=config.lr * 0.1,
        step_on_epochs=False, updates_per_epoch=steps_per_epoch,
    )
    return optimizer, scheduler


def _fusion_layer_decay_groups(config: NetworkConfig):
    """Image+text models: timm's layer-decay groups for the backbone, full rate for the fusion layers."""
    from timm.optim import param_groups_layer_decay

    def groups(model: torch.nn.Module) -> list[dict[str, Any]]:
        backbone = param_groups_layer_decay(model.image, weight_decay=config.weight_decay,
                                            layer_decay=config.layer_decay)
        fusion = [p for name, p in model.named_parameters() if not name.startswith("image.") and p.requires_grad]
        return backbone + [
            {"params": [p for p in fusion if p.ndim > 1], "weight_decay": config.weight_decay, "lr_scale": 1.0},
            {"params": [p for p in fusion if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": 1.0},
        ]

    return groups


def _batchnorm_eval(model: torch.nn.Module) -> None:
    """Normalise with the pretrained running statistics while training (their affine terms still
    learn). With small batches of a new domain, batch statistics differ wildly from the running
    ones the head was warmed up with, and the model trained in one regime is evaluated in another."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, crops: torch.Tensor | None, spec: ModelSpec, batch_size: int = 64,
                   text=None) -> torch.Tensor:
    """Logits for uint8 NCHW crops (and their texts, for image+text models), in evaluation mode.

    crops=None with text given: text-only predictions."""
    model.eval()
    count = len(crops) if crops is not None else len(text)
    outputs = []
    for i in range(0, count, batch_size):
        rows = range(i, min(i + batch_size, count))
        images = normalize(crops[i:i + batch_size], spec) if crops is not None else None
        outputs.append(model(images) if text is None else model(images, text.select(rows)))
    return torch.cat(outputs) if outputs else torch.empty(0, spec.num_classes)


def eval_crops(images: Sequence[Image.Image], spec: ModelSpec) -> torch.Tensor:
    """Centre crops of already-resized images, as one uint8 NCHW tensor."""
    if not images:
        return torch.empty(0, 3, spec.image_size, spec.image_size, dtype=torch.uint8)
    return torch.stack([center_crop_uint8(image, spec) for image in images])
