"""Heads trained on cached features: a linear classifier, or an image+text fusion head.

The frozen strategies (feature-extractor, shallow), fine-tune's warm-up and every image+text fit on a
frozen backbone train only a small head on features the backbone computed once
(`transfer.features`). Both kinds run the same loop (`train_on_features`), which reads top to
bottom: per epoch `# train` (shuffled mini-batches, AdamW, timm's cosine schedule stepped per
batch), `# evaluate` on the validation features, `# keep the best` (higher accuracy, then lower
loss), `# report`, `# termination` (patience, or the time budget once `min_epochs` have run).

Linear head: features are standardised with the training statistics (so one learning rate suits
every backbone), the head starts from zero (the problem is convex: the same features give the same
head), and the standardisation is folded back into its weights, so the saved head is a plain timm
classifier. Fusion head: the layers of a `zoo.model.ImageTextClassifier` other than its image
backbone, trained with modality dropout so the model answers from the image alone or the text alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from transfer.progress import Progress, Run


@dataclass
class HeadConfig:
    lr: float = 3e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4  # on standardised features; the head is tiny, little is needed
    max_epochs: int = 200  # upper bound; early stopping usually ends far sooner
    patience: int = 25  # epochs without a better validation score before stopping
    min_epochs: int = 10  # even past the time budget (milliseconds on cached features): never a 1-epoch head
    batch_size: int = 256  # features are small: big batches, few steps
    label_smoothing: float = 0.1


MODALITY_DROPOUT = 0.3  # image+text training: share of samples that lose one of the two inputs
FUSION_WEIGHT_DECAY = 1e-2
FUSION_MAX_BATCH = 64  # the fusion MLP needs more, smaller steps than a linear probe


def drop_modalities(text, generator: torch.Generator, rate: float = MODALITY_DROPOUT):
    """Randomly hide the image OR the text of `rate` of the samples (never both).

    Returns (image_present mask, text with some texts marked absent), so the model learns to
    answer from either input alone."""
    draw = torch.rand(len(text), generator=generator)
    image_present = draw >= rate / 2  # the lower half of the dropped share loses its image
    text_kept = text.select(range(len(text)))
    text_kept.present = text.present & ~((draw >= rate / 2) & (draw < rate))
    return image_present, text_kept


def train_linear_head(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    *,
    num_classes: int,
    class_weights: Sequence[float] | None = None,
    config: HeadConfig | None = None,
    run: Run | None = None,
    stage: str = "head",
    sample_weights: torch.Tensor | None = None,
) -> tuple[torch.nn.Linear, list[dict[str, Any]]]:
    """Train Linear(features -> classes); returns it (standardisation folded in) and the history.

    class_weights weigh the loss per class; sample_weights draw each epoch's rows with replacement
    in proportion to them (class-balanced resampling)."""
    config = config or HeadConfig()
    # standardise with training statistics; a floor relative to the typical variance, so a feature
    # (nearly) constant on the training images is not blown up into huge values on new ones
    mean, variance = train_x.mean(0), train_x.var(0)
    std = (variance + 1e-2 * variance.mean() + 1e-8).sqrt()
    train_z, val_z = (train_x - mean) / std, (val_x - mean) / std
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():  # a convex problem: start from zero, so the same features give the same head
        head.weight.zero_()
        head.bias.zero_()
    weights = _class_weights(class_weights)

    def batch_loss(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.cross_entropy(head(train_z[batch]), train_y[batch], weight=weights,
                               label_smoothing=config.label_smoothing)

    history = train_on_features(head, list(head.parameters()), num_train=len(train_z), batch_loss=batch_loss,
                                val_logits=lambda: head(val_z), val_y=val_y, config=config, run=run, stage=stage,
                                sample_weights=sample_weights)
    return _fold_standardisation(head, mean, std), history


def train_fusion_head(
    model: torch.nn.Module,
    train_features: torch.Tensor,
    train_text,
    train_y: torch.Tensor,
    val_features: torch.Tensor,
    val_text,
    val_y: torch.Tensor,
    *,
    class_weights: Sequence[float] | None = None,
    config: HeadConfig | None = None,
    run: Run | None = None,
    stage: str = "head",
    sample_weights: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Train an ImageTextClassifier's fusion layers (and hashing text encoder) on cached image features.

    The image backbone is not run: its pooled features come from the cache. Modality dropout
    teaches the model to answer from either input alone."""
    config = config or HeadConfig()
    config = replace(config, weight_decay=FUSION_WEIGHT_DECAY, batch_size=min(config.batch_size, FUSION_MAX_BATCH))
    parameters = [p for name, p in model.named_parameters() if not name.startswith("image.")]
    weights = _class_weights(class_weights)
    everyone = torch.ones(len(val_y), dtype=torch.bool)

    def batch_loss(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        image_present, text = drop_modalities(train_text.select(batch), generator)
        logits = model.fuse(train_features[batch], model.encode_text(text), image_present, text.present)
        return F.cross_entropy(logits, train_y[batch], weight=weights, label_smoothing=config.label_smoothing)

    def val_logits() -> torch.Tensor:
        return model.fuse(val_features, model.encode_text(val_text), everyone, val_text.present)

    history = train_on_features(model, parameters, num_train=len(train_y), batch_loss=batch_loss,
                                val_logits=val_logits, val_y=val_y, config=config, run=run, stage=stage,
                                sample_weights=sample_weights)
    model.eval()
    return history


def train_on_features(
    module: torch.nn.Module,
    parameters: list[torch.nn.Parameter],
    *,
    num_train: int,
    batch_loss: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    val_logits: Callable[[], torch.Tensor],
    val_y: torch.Tensor,
    config: HeadConfig,
    run: Run | None = None,
    stage: str = "head",
    sample_weights: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """The loop both heads share: `parameters` (of `module`) learn from `batch_loss(rows, generator)`;
    the best epoch's values are restored at the end. Returns the per-epoch history."""
    from timm.scheduler import create_scheduler_v2

    run = run or Run()
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(num_train / config.batch_size)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=config.max_epochs,
                                       step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    generator = torch.Generator().manual_seed(0)
    best, best_values, since_best, history, step = None, None, 0, [], 0
    for epoch in range(config.max_epochs):
        # train
        module.train()
        order = (torch.randperm(num_train, generator=generator) if sample_weights is None else
                 torch.multinomial(sample_weights, num_train, replacement=True, generator=generator))
        total_loss = 0.0
        for start in range(0, num_train, config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = batch_loss(batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            total_loss += loss.item() * len(batch)
        # evaluate
        with torch.inference_mode():
            module.eval()
            logits = val_logits()
            val_loss = F.cross_entropy(logits, val_y).item()
            val_accuracy = (logits.argmax(1) == val_y).float().mean().item()
        record = {"epoch": epoch + 1, "train_loss": total_loss / num_train, "val_loss": val_loss,
                  "val_accuracy": val_accuracy}
        history.append(record)
        # keep the best: higher accuracy, then lower loss
        score = (val_accuracy, -val_loss)
        if best is None or score > best:
            best, since_best = score, 0
            best_values = [p.detach().clone() for p in parameters]
        else:
            since_best += 1
        run.report(Progress(stage, epoch + 1, config.max_epochs, epoch=epoch + 1,
                            metrics={k: v for k, v in record.items() if k != "epoch"}))
        # termination (run.check() also raises Cancelled at once on request)
        out_of_time = run.check()
        if since_best >= config.patience or (out_of_time and epoch + 1 >= config.min_epochs):
            break
    with torch.no_grad():
        for parameter, value in zip(parameters, best_values):
            parameter.copy_(value)
    return history


def _class_weights(class_weights: Sequence[float] | None) -> torch.Tensor | None:
    return torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None


def _fold_standardisation(head: torch.nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> torch.nn.Linear:
    """W((x - m) / s) + b  ==  (W / s) x + (b - (W / s) m): a head that takes raw features."""
    with torch.no_grad():
        weight = head.weight / std
        bias = head.bias - weight @ mean
        folded = torch.nn.Linear(head.in_features, head.out_features)
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded
