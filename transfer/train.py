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

Images come from `transfer.loading` data loaders (decoded in worker processes, or from memory on the
fast path) and run on the engine's device (`transfer.engine`): autocast to bf16 or fp16 on a GPU
(fp16 with a gradient scaler), channels-last, non-blocking copies; with several processes the model
is DistributedDataParallel, each process trains on its share of every batch, validation logits are
gathered from all of them, and a stop or the end of the time budget stops all at the same batch.
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

from transfer.adapt import DomainAdversarial, adaptation_loss, dann_coefficient
from transfer.heads import drop_modalities
from transfer.loading import ImageFiles, loader
from transfer.progress import Progress, Run
from zoo.model import ModelSpec, count_parameters, normalize

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


EVAL_BATCH = 64  # images per evaluation batch
EXTRA_LR_SCALE = 10.0  # the domain discriminator learns this much faster than the head (it starts from nothing)
REPORT_SECONDS = 0.25  # per-batch progress at most this often (reading the loss syncs a GPU)


def training_transform(spec: ModelSpec, config: NetworkConfig):
    """timm's training augmentation -> uint8 tensors, normalised per batch on the device like evaluation."""
    from timm.data import create_transform

    return create_transform(
        input_size=spec.image_size, is_training=True, scale=config.augment_scale, hflip=config.hflip,
        color_jitter=config.color_jitter, interpolation=spec.interpolation, mean=spec.mean, std=spec.std,
        use_prefetcher=True,
    )


def train_network(
    model: torch.nn.Module,
    train_files: ImageFiles,
    val_files: ImageFiles,
    *,
    spec: ModelSpec,
    config: NetworkConfig,
    class_weights: Sequence[float] | None = None,
    run: Run | None = None,
    train_text=None,
    val_text=None,
    seed: int = 0,
    target_files: ImageFiles | None = None,
    sample_weights: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Train every trainable parameter of `model` in place; the best epoch's weights are restored.

    train_files' transform is set to timm's training augmentation; val_files' is left as given (a
    centre crop). train_text / val_text: `zoo.text.TextInputs` aligned with the files' rows, for
    image+text models (trained with modality dropout). target_files: unlabelled images of the target
    domain, for domain-adversarial training (`transfer.adapt`: a discriminator behind gradient
    reversal reads the pooled features of source and target batches alike). sample_weights: draw
    each epoch's images with replacement in proportion to them (class-balanced resampling)."""
    run = run or Run()
    engine = run.engine
    # setup
    trainable, total = count_parameters(model)
    log.info("training %s of %s parameters (%.1f%%) on %s (%s%s)", f"{trainable:,}", f"{total:,}",
             100 * trainable / total, engine.device, engine.precision,
             f", {engine.world_size} processes" if engine.distributed else "")
    model.to(engine.device, memory_format=torch.channels_last)
    train_files.transform = training_transform(spec, config)
    train_loader = loader(train_files, batch_size=config.batch_size, engine=engine, shuffle=True, seed=seed,
                          sample_weights=sample_weights)
    val_loader = loader(val_files, batch_size=EVAL_BATCH, engine=engine)
    steps_per_epoch = max(1, len(train_loader))
    adversarial = DomainAdversarial(model).to(engine.device) if target_files is not None else None
    optimizer, scheduler = make_optimizer(model, config, steps_per_epoch,
                                          extra=adversarial.discriminator if adversarial is not None else None)
    network = engine.prepare_model(adversarial or model)  # DistributedDataParallel with several processes
    target_batches = None
    if adversarial is not None:
        target_files.transform = train_files.transform
        target_batches = _forever(loader(target_files, batch_size=config.batch_size, engine=engine, shuffle=True,
                                         seed=seed + 1))
    scaler = engine.grad_scaler()
    weights = engine.to_device(torch.as_tensor(class_weights, dtype=torch.float32)) if class_weights is not None else None
    generator = torch.Generator().manual_seed(seed)
    step, total_steps, started = 0, steps_per_epoch * config.epochs, time.monotonic()
    # the starting point is a candidate too: training must not end worse than the warmed-up head.
    # Adapting to a target domain, only the second half's epochs are: the source's validation images
    # cannot judge the target, and by then the adversary's weight is near full (dann_coefficient(0.5) = 0.99)
    first_candidate = 0 if adversarial is None else math.ceil(config.epochs / 2)
    best, best_state, since_best, history = None, None, 0, []

    def evaluate_and_keep(epoch: int, train_loss: float | None, train_images_per_second: float | None = None) -> None:
        nonlocal best, best_state, since_best
        val_logits, val_y = evaluate(model, val_loader, val_files, spec, run, text=val_text)
        val_loss = F.cross_entropy(val_logits, val_y).item()
        val_accuracy = (val_logits.argmax(1) == val_y).float().mean().item()
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy,
                  "seconds": round(time.monotonic() - started, 2), "train_images_per_second": train_images_per_second}
        history.append(record)
        score = (val_accuracy, -val_loss)  # higher accuracy, then lower loss (the same on every process)
        if epoch >= first_candidate and (best is None or score > best):
            best, best_state, since_best = score, copy.deepcopy(model.state_dict()), 0
        elif epoch >= first_candidate:
            since_best += 1
        run.report(Progress("epoch", epoch, config.epochs, epoch=epoch, metrics={
            k: v for k, v in record.items() if k in ("train_loss", "val_loss", "val_accuracy") and v is not None}))

    evaluate_and_keep(0, None)
    for epoch in range(1, config.epochs + 1):
        # train
        network.train()
        if config.freeze_bn_stats:
            _batchnorm_eval(network)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        running_loss, seen, stopped, epoch_started, reported = 0.0, 0, False, time.monotonic(), 0.0
        for images, labels, rows in train_loader:
            if run.check():  # on every process at the same batch
                stopped = True
                break
            train_files.check_batch(labels, rows)
            if len(labels) < 2:  # BatchNorm cannot train on a batch of one
                continue
            inputs, targets = normalize(engine.to_device(images), spec), engine.to_device(labels)
            domain_loss = 0.0
            with engine.autocast():
                if adversarial is not None:  # source and target batches through one network
                    target_inputs = normalize(engine.to_device(next(target_batches)), spec)
                    logits, domains, features = network(torch.cat([inputs, target_inputs]),
                                                        dann_coefficient(step / total_steps))
                    logits = logits[:len(inputs)]
                    domain_loss = adaptation_loss(domains.float(), features.float(), len(inputs))
                elif train_text is None:
                    logits = network(inputs)
                else:
                    image_present, text = drop_modalities(train_text.select(rows), generator)
                    logits = network(inputs, text, image_present=engine.to_device(image_present))
            loss = F.cross_entropy(logits.float(), targets, weight=weights,
                                   label_smoothing=config.label_smoothing) + domain_loss
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:  # fp16: scale the loss so small gradients do not vanish
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            step += 1
            scheduler.step_update(step)
            running_loss += loss.detach() * len(labels)
            seen += len(labels)
            elapsed = time.monotonic() - started
            if elapsed - reported >= REPORT_SECONDS or step == total_steps:
                reported = elapsed
                run.report(Progress("train", step, total_steps, epoch=epoch,
                                    metrics={"train_loss": float(running_loss) / seen},
                                    eta_seconds=elapsed / step * (total_steps - step)))
        if seen == 0:
            break
        # evaluate, keep the best
        evaluate_and_keep(epoch, float(running_loss) / seen,
                          round(seen * engine.world_size / (time.monotonic() - epoch_started), 2))
        # termination
        if stopped or since_best >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def make_optimizer(model: torch.nn.Module, config: NetworkConfig, steps_per_epoch: int,
                   extra: torch.nn.Module | None = None):
    """AdamW over timm's layer-decay parameter groups, and timm's cosine schedule stepped per batch.

    The scheduler must be timm's: it is what multiplies each group's rate by its `lr_scale`
    (a torch scheduler would silently train every layer at the head's rate). extra: a module
    trained beside the model at the head's rate (the domain discriminator).
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    group_fn = _fusion_layer_decay_groups(config) if config.layer_decay and hasattr(model, "fuse") else None
    optimizer = create_optimizer_v2(model, opt="adamw", lr=config.lr, weight_decay=config.weight_decay,
                                    layer_decay=config.layer_decay, param_group_fn=group_fn)
    if extra is not None:
        optimizer.add_param_group({"params": list(extra.parameters()), "lr": config.lr, "lr_scale": EXTRA_LR_SCALE,
                                   "weight_decay": config.weight_decay})
    scheduler, _ = create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=config.epochs, min_lr=config.lr * 0.01,
        warmup_epochs=math.ceil(config.warmup_epochs), warmup_lr=config.lr * 0.1,
        step_on_epochs=False, updates_per_epoch=steps_per_epoch,
    )
    return optimizer, scheduler


def _forever(batches):
    """The images of `batches`, epoch after epoch (the target domain's, beside the source's)."""
    epoch = 0
    while True:
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        for images, _labels, _rows in batches:
            yield images
        epoch += 1


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
def evaluate(model: torch.nn.Module, data_loader, files: ImageFiles, spec: ModelSpec, run: Run,
             text=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) on the CPU for every image of `data_loader` (from every process), in order.

    text: `zoo.text.TextInputs` aligned with the files' rows (image+text models)."""
    engine = run.engine
    model.eval()
    outputs, labels = [], []
    for images, targets, rows in data_loader:
        files.check_batch(targets, rows)
        with engine.autocast():
            inputs = normalize(engine.to_device(images), spec)
            logits = model(inputs) if text is None else model(inputs, text.select(rows))
        outputs.append(engine.gather(logits.float()).cpu())
        labels.append(engine.gather(engine.to_device(targets)).cpu())
    if not outputs:
        return torch.empty(0, spec.num_classes), torch.empty(0, dtype=torch.long)
    return torch.cat(outputs), torch.cat(labels)


@torch.inference_mode()
def text_logits(model: torch.nn.Module, text, device, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """An image+text model's logits from the text alone (for its ablation), on the CPU."""
    model.eval()
    outputs = [model(None, text.select(range(start, min(start + batch_size, len(text))))).float().cpu()
               for start in range(0, len(text), batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0, model.num_classes)
