"""The training loops: a linear head on cached features, and a whole network on images.

Both loops read top to bottom in the same stages: setup, then per epoch `# train` (checking the
stop flag and the time budget every batch), `# evaluate` on validation data, `# keep the best`
(early stopping restores the best epoch), `# report` through the progress callback.

Head on cached features (feature-extractor, shallow, fine-tune's warm-up): features are
standardised, a Linear layer trains with AdamW and a cosine schedule, and the standardisation is
folded back into its weights, so the saved head is a plain timm classifier.

Whole network (fine-tune, from-scratch): timm's layer-decay parameter groups (`layer_decay=0.85`
on fine-tune: each depth group learns 0.85x as fast as the one above it, so the stem of lite0 gets
about 1/16 of the head's rate) and timm's cosine scheduler, which is what applies those per-group
scales; timm's training augmentation; channels-last tensors; class-weighted cross-entropy.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from transfer import Cancelled
from zoo.model import ModelSpec, center_crop_uint8, count_parameters, normalize

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """One report from a running fit, for a progress bar or a live plot."""

    stage: str  # "read" | "features" | "head" | "search" | "train" | "evaluate" | "save"
    done: int  # units finished in this stage (images, or epochs)
    total: int  # units in this stage
    message: str = ""
    epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. train_loss, val_loss, val_accuracy
    eta_seconds: float | None = None  # for this stage


ProgressCallback = Callable[[Progress], None]


@dataclass
class Run:
    """What every loop needs to know about the run around it."""

    progress: ProgressCallback | None = None
    should_stop: Callable[[], bool] | None = None  # checked every batch: True -> Cancelled
    deadline: float | None = None  # time.monotonic() by which training must end (time budget)
    budget_hit: bool = False  # set when a loop stopped early because of the deadline

    def report(self, event: Progress) -> None:
        if self.progress:
            self.progress(event)

    def check(self) -> bool:
        """Raise Cancelled on request; True when the time budget is spent (the caller stops)."""
        if self.should_stop and self.should_stop():
            raise Cancelled("cancelled; nothing was saved")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.budget_hit = True
            return True
        return False


@dataclass
class HeadConfig:
    lr: float = 3e-3  # AdamW peak learning rate
    weight_decay: float = 1e-4  # on standardised features; the head is tiny, little is needed
    max_epochs: int = 200  # upper bound; early stopping usually ends far sooner
    patience: int = 25  # epochs without a better validation score before stopping
    min_epochs: int = 10  # even past the time budget (milliseconds on cached features): never a 1-epoch head
    batch_size: int = 256  # features are small: big batches, few steps
    label_smoothing: float = 0.1


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


MODALITY_DROPOUT = 0.3  # image+text training: share of samples that lose one of the two inputs


def drop_modalities(text, generator: torch.Generator, rate: float = MODALITY_DROPOUT):
    """Randomly hide the image OR the text of `rate` of the samples (never both).

    Returns (image_present mask, text with some texts marked absent), so the model learns to
    answer from either input alone."""
    draw = torch.rand(len(text), generator=generator)
    image_present = draw >= rate / 2  # the lower half of the dropped share loses its image
    text_kept = text.select(range(len(text)))
    text_kept.present = text.present & ~((draw >= rate / 2) & (draw < rate))
    return image_present, text_kept


# --- a linear head on cached features ----------------------------------------------------------------


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
) -> tuple[torch.nn.Linear, list[dict[str, Any]]]:
    """Train Linear(features -> classes); returns it (standardisation folded in) and the history."""
    from timm.scheduler import create_scheduler_v2

    config, run = config or HeadConfig(), run or Run()
    # setup: standardise with training statistics, so one learning rate suits every backbone
    mean = train_x.mean(0)
    variance = train_x.var(0)
    # a floor relative to the typical variance: a feature (nearly) constant on the training images
    # must not be blown up into huge values on new ones
    std = (variance + 1e-2 * variance.mean() + 1e-8).sqrt()
    train_z, val_z = (train_x - mean) / std, (val_x - mean) / std
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():  # a convex problem: start from zero, so the same features give the same head
        head.weight.zero_()
        head.bias.zero_()
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_z) / config.batch_size)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=config.max_epochs,
                                       step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    weights = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    generator = torch.Generator().manual_seed(0)
    best, best_state, since_best, history = None, None, 0, []
    step = 0
    for epoch in range(config.max_epochs):
        # train
        head.train()
        order = torch.randperm(len(train_z), generator=generator)
        total_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = F.cross_entropy(head(train_z[batch]), train_y[batch], weight=weights,
                                   label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            total_loss += loss.item() * len(batch)
        # evaluate
        with torch.inference_mode():
            head.eval()
            val_logits = head(val_z)
            val_loss = F.cross_entropy(val_logits, val_y).item()
            val_accuracy = (val_logits.argmax(1) == val_y).float().mean().item()
        record = {"epoch": epoch + 1, "train_loss": total_loss / len(order), "val_loss": val_loss,
                  "val_accuracy": val_accuracy}
        history.append(record)
        # keep the best: higher accuracy, then lower loss
        score = (val_accuracy, -val_loss)
        if best is None or score > best:
            best, best_state, since_best = score, copy.deepcopy(head.state_dict()), 0
        else:
            since_best += 1
        run.report(Progress(stage, epoch + 1, config.max_epochs, epoch=epoch + 1,
                            metrics={k: v for k, v in record.items() if k != "epoch"}))
        # termination (run.check() also raises Cancelled at once on request)
        out_of_time = run.check()
        if since_best >= config.patience or (out_of_time and epoch + 1 >= config.min_epochs):
            break
    head.load_state_dict(best_state)
    return _fold_standardisation(head, mean, std), history


def _fold_standardisation(head: torch.nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> torch.nn.Linear:
    """W((x - m) / s) + b  ==  (W / s) x + (b - (W / s) m): a head that takes raw features."""
    with torch.no_grad():
        weight = head.weight / std
        bias = head.bias - weight @ mean
        folded = torch.nn.Linear(head.in_features, head.out_features)
        folded.weight.copy_(weight)
        folded.bias.copy_(bias)
    return folded


# --- a whole network on images -------------------------------------------------------------------------


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
    from timm.optim._param_groups import param_groups_layer_decay

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


# --- an image+text head on cached features --------------------------------------------------------------


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
) -> list[dict[str, Any]]:
    """Train an ImageTextClassifier's fusion layers (and hashing text encoder) on cached image features.

    The image backbone is not run: its pooled features come from the cache. Modality dropout
    teaches the model to answer from either input alone."""
    from timm.scheduler import create_scheduler_v2

    config, run = config or HeadConfig(), run or Run()
    parameters = [p for name, p in model.named_parameters() if not name.startswith("image.")]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=1e-2)
    batch_size = min(config.batch_size, 64)  # the MLP needs more, smaller steps than a linear probe
    steps_per_epoch = math.ceil(len(train_y) / batch_size)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=config.max_epochs,
                                       step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    weights = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    generator = torch.Generator().manual_seed(0)
    trainable = {name: p for name, p in model.state_dict().items() if not name.startswith("image.")}
    best, best_state, since_best, history, step = None, None, 0, [], 0
    everyone = torch.ones(len(val_y), dtype=torch.bool)
    for epoch in range(config.max_epochs):
        # train
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        total_loss = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            image_present, text = drop_modalities(train_text.select(batch), generator)
            logits = model.fuse(train_features[batch], model.encode_text(text), image_present, text.present)
            loss = F.cross_entropy(logits, train_y[batch], weight=weights, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            total_loss += loss.item() * len(batch)
        # evaluate
        with torch.inference_mode():
            model.eval()
            val_logits = model.fuse(val_features, model.encode_text(val_text), everyone, val_text.present)
            val_loss = F.cross_entropy(val_logits, val_y).item()
            val_accuracy = (val_logits.argmax(1) == val_y).float().mean().item()
        record = {"epoch": epoch + 1, "train_loss": total_loss / len(order), "val_loss": val_loss,
                  "val_accuracy": val_accuracy}
        history.append(record)
        # keep the best
        score = (val_accuracy, -val_loss)
        if best is None or score > best:
            best, since_best = score, 0
            best_state = {name: tensor.detach().clone() for name, tensor in trainable.items()}
        else:
            since_best += 1
        run.report(Progress(stage, epoch + 1, config.max_epochs, epoch=epoch + 1,
                            metrics={k: v for k, v in record.items() if k != "epoch"}))
        # termination
        out_of_time = run.check()
        if since_best >= config.patience or (out_of_time and epoch + 1 >= config.min_epochs):
            break
    model.load_state_dict(best_state, strict=False)
    model.eval()
    return history


def eval_crops(images: Sequence[Image.Image], spec: ModelSpec) -> torch.Tensor:
    """Centre crops of already-resized images, as one uint8 NCHW tensor."""
    if not images:
        return torch.empty(0, 3, spec.image_size, spec.image_size, dtype=torch.uint8)
    return torch.stack([center_crop_uint8(image, spec) for image in images])
