"""One fit, start to finish: data -> weights -> model -> train -> metrics -> saved in the zoo.

    result = fit("digits/", strategy="shallow", image_size=64)

Frozen strategies (feature-extractor, shallow) never run the backbone more than once per image:
its features come from the cache (`transfer.features`) or from one streamed pass that fills it.
Trainable strategies (fine-tune, from-scratch) decode each image once, keep it in memory at the
fit's size, and augment from there every epoch. The reported metrics come from the held-out
`test/` split when there is one, else from validation (and the result says which).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from transfer import DataError
from transfer.data import Dataset, decode_images, drop_failed, load_dataset
from transfer.features import Features, cache_key, cached_features, cached_text_inputs
from transfer.metrics import classification_metrics
from transfer.strategies import HEAD_EPOCHS, WARMUP_HEAD_EPOCHS, Strategy, get_strategy
from transfer.train import (
    HeadConfig,
    NetworkConfig,
    Progress,
    ProgressCallback,
    Run,
    eval_crops,
    predict_logits,
    train_fusion_head,
    train_linear_head,
    train_network,
)
from zoo import ZooError
from zoo.model import ImageTextClassifier, ModelSpec, count_parameters, text_settings
from zoo.text import DEFAULT_ENCODER as DEFAULT_TEXT_ENCODER
from zoo.store import save_model, validate_name
from zoo.weights import DEFAULT_BACKBONE, Weights, create_backbone, package_version, random_weights, resolve_weights

log = logging.getLogger(__name__)



@dataclass
class FitResult:
    name: str
    path: Path
    strategy: str
    backbone: str
    classes: list[str]
    num_train: int
    num_val: int
    num_test: int
    metrics: dict[str, Any]  # accuracy, macro_f1, per_class, confusion_matrix
    metrics_split: str  # "test" when the data had a test/ split, else "val"
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0
    image_size: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the shallow cut search
    ablation: dict[str, float] | None = None  # image+text: validation accuracy per input combination
    stopped_by_budget: bool = False
    advice: dict[str, Any] | None = None  # strategy="auto": what was chosen and why (transfer.advise)
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)  # as saved

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "model"}
        data["path"] = str(self.path)
        data["skipped"] = [{"file": file, "reason": reason} for file, reason in self.skipped]
        return data


def fit(
    data: str | Path | Dataset,
    *,
    backbone: str = DEFAULT_BACKBONE,
    strategy: str = "auto",
    name: str | None = None,
    zoo: str | Path | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    batch_size: int = 32,
    max_seconds: float | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    text_encoder: str | None = None,
    extra_info: dict[str, Any] | None = None,
) -> FitResult:
    """Fine-tune `backbone` on `data` under `strategy` and save the model in the zoo.

    strategy: "auto" (the default, as in the CLI and the app): measure the data and choose
        (`transfer.advise`, within max_seconds), the advice saved in transfer.json; or one of
        `transfer.strategies.STRATEGIES` by name.
    epochs: passes over the images for trainable strategies (default: the strategy's); for frozen
        ones, the most epochs the head may train on cached features.
    max_seconds: time budget for the whole fit; training stops early (keeping its best epoch) to
        stay within it. should_stop: polled every batch; when it returns True the fit raises
        `transfer.Cancelled` and saves nothing.
    text_encoder: for data with a sentence per image (metadata.jsonl/csv): "minilm" (the default
        when the data has text), "hashing", a sentence-transformers model name, or "none" to
        ignore the text. The model then fuses image and text and still answers from either alone.
    """
    started = time.monotonic()
    plan = None if strategy == "auto" else get_strategy(strategy)  # an unknown name fails before any work
    if name is not None:
        validate_name(name)
    if batch_size < 2:
        raise DataError("batch size must be at least 2")
    run = Run(progress=progress, should_stop=should_stop,
              deadline=started + max_seconds if max_seconds else None)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_fraction=val_fraction, seed=seed)
    advice = None
    if plan is None:  # auto: its frozen pass fills the feature cache that a frozen fit then reads
        from transfer.advise import advise

        advice = advise(dataset, backbone=backbone, zoo=zoo, image_size=image_size, epochs=epochs,
                        budget_seconds=max_seconds - (time.monotonic() - started) if max_seconds else None,
                        batch_size=batch_size, progress=progress, should_stop=should_stop).to_json()
        plan = get_strategy(advice["strategy"])
    weights = _weights_for(plan, backbone, zoo)
    size = image_size or plan.image_size or int(weights.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    if not 16 <= size <= 1024:
        raise DataError(f"image size {size} px is out of range; use 16-1024 (for example 224)")
    spec = ModelSpec.for_weights(weights, dataset.classes, image_size=size)
    encoder = _text_encoder_for(dataset, text_encoder)
    if encoder:
        spec.text = text_settings(encoder)
    torch.manual_seed(seed)
    random.seed(seed)  # timm's RandomResizedCrop draws from Python's random: the same seed, the same run
    run.report(Progress("start", 0, 1, message=f"{plan.name} on {len(dataset.train)} training images"))

    if plan.trains_backbone:
        model, spec, outcome = _fit_network(dataset, weights, spec, plan, epochs, batch_size, zoo, run)
    else:
        model, spec, outcome = _fit_frozen(dataset, weights, spec, plan, epochs, batch_size, zoo, run)

    # metrics on the held-out test split when there is one, else on validation
    split = "test" if dataset.test else "val"
    metrics = classification_metrics(outcome.labels[split], outcome.logits[split].argmax(1).tolist(), spec.label_names)
    val_metrics = metrics if split == "val" else classification_metrics(
        outcome.labels["val"], outcome.logits["val"].argmax(1).tolist(), spec.label_names)
    trainable, total = outcome.parameters or count_parameters(model)
    name = name or _default_name(dataset, plan)
    train_seconds = round(time.monotonic() - started, 2)
    info = {
        "strategy": plan.name,
        "backbone": {"name": backbone, "architecture": weights.architecture, "source": weights.source,
                     "fingerprint": weights.fingerprint,
                     "hub_id": backbone.removeprefix("hf-hub:") if weights.source == "hub" else None},
        "data": {**dataset.summary(), "source": dataset.source.name, "fingerprint": outcome.data_fingerprint},
        "metrics": metrics,
        "metrics_split": split,
        "val_metrics": {k: val_metrics[k] for k in ("accuracy", "macro_f1")},
        "history": outcome.history,
        "details": outcome.details,
        "ablation": outcome.ablation,
        "text": {"encoder": encoder, "report": dataset.text_report} if encoder else None,
        "parameters": {"trainable": trainable, "total": total},
        "stopped_by_budget": run.budget_hit,
        "advice": advice,
        "settings": {"image_size": spec.image_size, "epochs": outcome.epochs, "batch_size": batch_size,
                     "max_seconds": max_seconds, "seed": seed, "val_fraction": val_fraction},
        "train_seconds": train_seconds,
        "versions": {"transfer-zoo": package_version("transfer-zoo"), "torch": torch.__version__,
                     "timm": package_version("timm")},
        **(extra_info or {}),
    }
    run.report(Progress("save", 0, 1, message=f"saving {name}"))
    path = save_model(model, spec, info, name=name, zoo=zoo, overwrite=overwrite)
    run.report(Progress("save", 1, 1, message=f"saved {name}"))
    return FitResult(
        name=name, path=path, strategy=plan.name, backbone=backbone, classes=list(spec.label_names),
        num_train=len(dataset.train), num_val=len(dataset.val), num_test=len(dataset.test),
        metrics=metrics, metrics_split=split, train_seconds=train_seconds, history=outcome.history,
        skipped=list(dataset.skipped), warnings=list(dataset.warnings), trainable_parameters=trainable,
        total_parameters=total, image_size=spec.image_size, details=outcome.details,
        ablation=outcome.ablation, stopped_by_budget=run.budget_hit, advice=advice, model=model,
    )


@dataclass
class _Outcome:
    logits: dict[str, torch.Tensor]  # per split: (N, classes) from the final model
    labels: dict[str, list[int]]
    history: list[dict[str, Any]]
    epochs: int | None
    data_fingerprint: str
    details: dict[str, Any] = field(default_factory=dict)
    parameters: tuple[int, int] | None = None  # (trainable, total) when the model itself does not say
    ablation: dict[str, float] | None = None


# --- frozen strategies: a head on cached features -----------------------------------------------------


def _fit_frozen(dataset, weights, spec, plan: Strategy, epochs, batch_size, zoo, run: Run):
    model = create_backbone(weights).eval().to(memory_format=torch.channels_last)
    features, labels, fingerprint = cached_features(dataset, model, weights, spec, batch_size, zoo, run)
    head_config = HeadConfig(lr=plan.lr, max_epochs=epochs or HEAD_EPOCHS)
    class_weights = dataset.class_weights()

    def probe(select: Callable[[Features], torch.Tensor], stage: str):
        return train_linear_head(
            select(features["train"]), torch.tensor(labels["train"]), select(features["val"]),
            torch.tensor(labels["val"]), num_classes=spec.num_classes, class_weights=class_weights,
            config=head_config, run=run, stage=stage,
        )

    details: dict[str, Any] = {}
    if plan.search_cut:
        # one probe per stage on the cached pooled features; the best validation accuracy wins
        # (ties go to the earlier, smaller stage)
        stage_count = len(features["train"].stages)
        if stage_count == 0:
            raise ZooError(f"{weights.architecture} cannot report intermediate stages; use feature-extractor")
        search, best = [], None
        for k in range(stage_count):
            head, history = probe(lambda f, k=k: f.stages[k], f"search stage {k + 1}/{stage_count}")
            accuracy = max(row["val_accuracy"] for row in history)
            search.append({"stage": k, "channels": int(features["train"].stages[k].shape[1]),
                           "val_accuracy": round(accuracy, 4), "epochs": len(history)})
            if best is None or accuracy > best[0]:
                best = (accuracy, k, head, history)
            run.report(Progress("search", k + 1, stage_count, message=f"stage {k}: {accuracy:.3f}"))
        _, cut, head, history = best
        details["cut_search"] = search
        details["cut_stage"] = cut
        model.prune_intermediate_layers([cut])
        model.reset_classifier(spec.num_classes, "avg")
        spec.cut_stage = cut
        select = lambda f: f.stages[cut]  # noqa: E731
    else:
        head, history = probe(lambda f: f.final, "head") if spec.text is None else (None, [])
        model.reset_classifier(spec.num_classes)
        select = lambda f: f.final  # noqa: E731
    if spec.text is not None:
        return _fuse_on_cached(dataset, model, spec, features, labels, select, fingerprint, details, epochs, zoo, run)
    model.get_classifier().load_state_dict(head.state_dict())
    model.pretrained_cfg = {**model.pretrained_cfg, **spec.data_config(), "num_classes": spec.num_classes}
    with torch.inference_mode():
        logits = {split: head(select(features[split])) for split in ("train", "val", "test")}
    trainable = sum(p.numel() for p in head.parameters())
    total = sum(p.numel() for p in model.parameters())
    log.info("training %s of %s parameters (%.2f%%): the new head", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model, spec, _Outcome(logits, labels, history, len(history), fingerprint, details,
                                 parameters=(trainable, total))


def _fuse_on_cached(dataset, backbone, spec, features, labels, select, fingerprint, details, epochs, zoo, run: Run):
    """Image+text on a frozen backbone: the fusion layers train on cached image and text features."""
    backbone.reset_classifier(0)
    model = ImageTextClassifier(backbone, image_dim=backbone.num_features, num_classes=spec.num_classes, **spec.text)
    text = _split_texts(dataset, spec.text["encoder"], zoo, run)
    history = train_fusion_head(
        model, select(features["train"]), text["train"], torch.tensor(labels["train"]), select(features["val"]),
        text["val"], torch.tensor(labels["val"]), class_weights=dataset.class_weights(),
        config=HeadConfig(lr=1e-3, max_epochs=epochs or HEAD_EPOCHS), run=run, stage="fusion head",
    )

    def logits_for(split: str, image: bool = True, with_text: bool = True) -> torch.Tensor:
        inputs = text[split] if with_text else text[split].without_text()
        present = torch.full((len(labels[split]),), image, dtype=torch.bool)
        with torch.inference_mode():
            return model.fuse(select(features[split]), model.encode_text(inputs), present, inputs.present)

    logits = {split: logits_for(split) for split in ("train", "val", "test")}
    ablation = _ablation(lambda image, with_text: logits_for("val", image, with_text), labels["val"])
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("image."))
    log.info("training %s of %s parameters (%.2f%%): the fusion layers", f"{trainable:,}", f"{total:,}",
             100 * trainable / total)
    return model, spec, _Outcome(logits, labels, history, len(history), fingerprint, details,
                                 parameters=(trainable, total), ablation=ablation)


def _split_texts(dataset: Dataset, encoder: str, zoo, run: Run) -> dict[str, Any]:
    """{split: TextInputs} aligned with the dataset's (final) splits; frozen encoders use the cache."""
    run.report(Progress("text", 0, 1, message=f"encoding texts ({encoder})"))
    samples = dataset.train + dataset.val + dataset.test
    inputs = cached_text_inputs(encoder, [sample.text for sample in samples], zoo=zoo)
    per_split, row = {}, 0
    for split, members in dataset.splits().items():
        per_split[split] = inputs.select(range(row, row + len(members)))
        row += len(members)
    run.report(Progress("text", 1, 1, message="texts encoded"))
    return per_split


def _ablation(logits_for: Callable[[bool, bool], torch.Tensor], labels: list[int]) -> dict[str, float]:
    """Validation accuracy from the image alone, the text alone, and both."""
    truth = torch.tensor(labels)

    def accuracy(image: bool, with_text: bool) -> float:
        return round((logits_for(image, with_text).argmax(1) == truth).float().mean().item(), 4)

    return {"image_only": accuracy(True, False), "text_only": accuracy(False, True),
            "image_and_text": accuracy(True, True)}


def _text_encoder_for(dataset: Dataset, requested: str | None) -> str | None:
    """The text encoder this fit uses: None when the data has no text or text is switched off."""
    if requested == "none":
        return None
    if not dataset.has_text:
        if requested:
            raise DataError(
                f"--text-encoder {requested} was given but {dataset.source.name} has no texts: add a "
                "metadata.jsonl (or .csv) beside the images with 'file_name' and 'text' columns"
            )
        return None
    return requested or DEFAULT_TEXT_ENCODER


# --- trainable strategies: the whole network on images ---------------------------------------------------


def _fit_network(dataset, weights, spec, plan: Strategy, epochs, batch_size, zoo, run: Run):
    samples = dataset.train + dataset.val + dataset.test
    images, hashes, errors = decode_images(
        dataset, samples, shorter_side=spec.resized_side, should_stop=run.should_stop,
        on_progress=lambda done, total: run.report(Progress("read", done, total, message="reading images")),
    )
    drop_failed(dataset, {s.relpath: error for s, error in zip(samples, errors) if error})
    hashes = [h for h, image in zip(hashes, images) if image is not None]
    images = [image for image in images if image is not None]
    split_images, labels, row = {}, {}, 0
    for split, members in dataset.splits().items():
        split_images[split] = images[row:row + len(members)]
        labels[split] = [sample.label for sample in members]
        row += len(members)

    backbone = create_backbone(weights, num_classes=spec.num_classes)
    model, text = backbone, None
    if spec.text is not None:
        backbone.reset_classifier(0)
        model = ImageTextClassifier(backbone, image_dim=backbone.num_features, num_classes=spec.num_classes,
                                    **spec.text)
        text = _split_texts(dataset, spec.text["encoder"], zoo, run)
    history: list[dict[str, Any]] = []
    fingerprint = cache_key(weights.fingerprint, spec, hashes)
    if plan.head_warmup:
        # phase 1: the head learns on the frozen backbone's features (one cached pass), so that a
        # random head does not push the pretrained layers around at the start of phase 2
        features, _, fingerprint = cached_features(dataset, backbone, weights, spec, batch_size, zoo, run,
                                                    decoded=(images, hashes))
        warmup_config = HeadConfig(lr=3e-3 if text is None else 1e-3, max_epochs=WARMUP_HEAD_EPOCHS)
        if text is None:
            head, warmup = train_linear_head(
                features["train"].final, torch.tensor(labels["train"]), features["val"].final,
                torch.tensor(labels["val"]), num_classes=spec.num_classes, class_weights=dataset.class_weights(),
                config=warmup_config, run=run, stage="warm-up",
            )
            model.get_classifier().load_state_dict(head.state_dict())
        else:
            warmup = train_fusion_head(
                model, features["train"].final, text["train"], torch.tensor(labels["train"]),
                features["val"].final, text["val"], torch.tensor(labels["val"]),
                class_weights=dataset.class_weights(), config=warmup_config, run=run, stage="warm-up",
            )
        history += [{**record, "phase": "warm-up"} for record in warmup]
    # phase 2 (from-scratch: the only phase): every layer trains
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    config_epochs = epochs or plan.epochs
    config = NetworkConfig(epochs=config_epochs, batch_size=batch_size, lr=plan.lr,
                           layer_decay=plan.layer_decay, warmup_epochs=plan.warmup_epochs,
                           freeze_bn_stats=plan.freeze_bn_stats, patience=plan.patience or config_epochs)
    val_crops = eval_crops(split_images["val"], spec)
    history += [{**record, "phase": "train"} for record in train_network(
        model, split_images["train"], torch.tensor(labels["train"]), val_crops, torch.tensor(labels["val"]),
        spec=spec, config=config, class_weights=dataset.class_weights(), run=run,
        train_text=text["train"] if text else None, val_text=text["val"] if text else None,
    )]
    run.report(Progress("evaluate", 0, 1, message="evaluating"))
    test_crops = eval_crops(split_images["test"], spec)
    logits = {"val": predict_logits(model, val_crops, spec, text=text["val"] if text else None),
              "test": predict_logits(model, test_crops, spec, text=text["test"] if text else None)}
    ablation = None
    if text is not None:
        ablation = _ablation(
            lambda image, with_text: predict_logits(
                model, val_crops if image else None, spec,
                text=text["val"] if with_text else text["val"].without_text()),
            labels["val"],
        )
    details = {"lr": plan.lr, "layer_decay": plan.layer_decay}
    return model, spec, _Outcome(logits, labels, history, config.epochs, fingerprint, details, ablation=ablation)


# --- helpers -----------------------------------------------------------------------------------------------


def _weights_for(plan: Strategy, backbone: str, zoo) -> Weights:
    if plan.pretrained:
        return resolve_weights(backbone, zoo=zoo)
    # from scratch: only the architecture matters; nothing is downloaded
    if backbone.startswith(("zoo:", "hf-hub:")) or "@" in backbone or backbone.endswith(".safetensors"):
        return random_weights(resolve_weights(backbone, zoo=zoo).architecture)
    return random_weights(backbone)


def _default_name(dataset: Dataset, plan: Strategy) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-._") or "model"
    return f"{stem[:40]}-{plan.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
