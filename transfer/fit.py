"""One fit, start to finish: data -> weights -> model -> train -> metrics -> saved in the zoo.

    result = fit("digits/", strategy="shallow", image_size=64)

The strategy's own work is `transfer.frozen` (feature-extractor, shallow: a head on cached
features) or `transfer.trainable` (fine-tune, from-scratch: every layer trains). This module
builds the spec, trains (auto: `transfer.auto`'s staged search, which may train several and keeps
one), measures and saves. The reported metrics come
from the held-out `test/` split when there is one, else from validation (and the result says which).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from transfer import DataError
from transfer.balance import choose_balance, train_counts
from transfer.data import Dataset, load_dataset
from transfer.engine import make_engine
from transfer.errors import error_report
from transfer.frozen import fit_frozen
from transfer.metrics import classification_metrics
from transfer.outcome import Fitted
from transfer.progress import Progress, ProgressCallback, Run
from transfer.strategies import Strategy, get_strategy, image_size_for
from transfer.target import plan_adaptation
from transfer.trainable import fit_network
from zoo import zoo_dir
from zoo.catalog import lineage_info, parent_of, resolve_weights
from zoo.model import ModelSpec, count_parameters, text_settings
from zoo.store import save_model, validate_name
from zoo.text import DEFAULT_ENCODER as DEFAULT_TEXT_ENCODER
from zoo.weights import DEFAULT_BACKBONE, Weights, create_backbone, package_version, random_weights

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
    advice: dict[str, Any] | None = None  # strategy="auto": what was tried, chosen and why (transfer.auto)
    val_accuracy: float | None = None  # on the validation split (what auto and early stopping judge by)
    errors: dict[str, Any] | None = None  # the misclassified images of metrics_split (transfer.errors)
    balance: dict[str, Any] | None = None  # how lopsided classes were handled (transfer.balance)
    adaptation: dict[str, Any] | None = None  # the target domain and what adapting to it changed
    parent: dict[str, Any] | None = None  # the zoo model this one continues (backbone zoo:NAME)
    notes: list[str] = field(default_factory=list)  # plain sentences on balance and adaptation
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
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
    target_domain: str | Path | None = None,
    adaptation: str = "auto",
    balance: str = "auto",
) -> FitResult:
    """Fine-tune `backbone` on `data` under `strategy` and save the model in the zoo.

    strategy: "auto" (the default, as in the CLI and the app): measure the data, try the frozen
        strategies on one cached pass, and go on to a trainable one only when it is likely to gain
        more than its time is worth (`transfer.auto`, within max_seconds); the advice is saved in
        transfer.json. Or one of `transfer.strategies.STRATEGIES` by name.
    image_size: input size in px (None: chosen from the images, `transfer.strategies.image_size_for`).
    epochs: passes over the images for trainable strategies (default: the strategy's); for frozen
        ones, the most epochs the head may train on cached features (auto's frozen stages keep
        their own default, early stopping).
    max_seconds: time budget for the whole fit; training stops early (keeping its best epoch) to
        stay within it. should_stop: polled every batch; when it returns True the fit raises
        `transfer.Cancelled` and saves nothing.
    text_encoder: for data with a sentence per image (metadata.jsonl/csv): "minilm" (the default
        when the data has text), "hashing", a sentence-transformers model name, or "none" to
        ignore the text. The model then fuses image and text and still answers from either alone.
    device: "auto" (CUDA, then MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps"; precision:
        "auto" (bf16/fp16 autocast on a GPU, fp32 elsewhere), "bf16", "fp16" or "fp32"; workers: data
        loader processes (default: the spare cores). Launched by `accelerate launch` or `torchrun`,
        every process runs this same call (see `transfer.engine`); only the main one saves.
    target_domain: a folder or zip of images from where the model will be used (no labels needed;
        class folders, if any, only measure the target accuracy); adaptation: "auto" (adapt when
        the measured shift is large), "on" or "off" (`transfer.adapt`, `transfer.target`).
    balance: "auto", "weights", "resample" or "none" for lopsided classes (`transfer.balance`).
    backbone "zoo:NAME" continues a zoo model: its weights, its head when the classes are the same,
    and the lineage recorded in transfer.json and the card.
    The model is saved in float32, from the CPU, whatever trained it.
    """
    started = time.monotonic()
    plan = None if strategy == "auto" else get_strategy(strategy)  # an unknown name fails before any work
    if name is not None:
        validate_name(name)
    if batch_size < 2:
        raise DataError("batch size must be at least 2")
    engine = make_engine(device, precision, workers)
    run = Run(progress=progress, should_stop=should_stop,
              deadline=started + max_seconds if max_seconds else None, engine=engine)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_fraction=val_fraction, seed=seed)
    encoder = _text_encoder_for(dataset, text_encoder)
    balancing = choose_balance(train_counts(dataset), balance)
    parent = parent_of(backbone, zoo=zoo)
    adapting = None
    if target_domain is not None:
        pretrained = resolve_weights(backbone, zoo=zoo)
        adapting = plan_adaptation(dataset, target_domain, adaptation,
                                   pretrained, image_size_for("feature-extractor", image_size,
                                                              pretrained.native_size, dataset.median_side), run)

    def train(strategy_name: str, warm_head: torch.nn.Linear | None = None, epochs: int | None = epochs) -> Fitted:
        """One strategy on `dataset` with this fit's settings (auto's frozen stages: epochs=None, so
        `--epochs`, meant for the network, does not cut their heads short); nothing saved yet."""
        begun, plan = time.monotonic(), get_strategy(strategy_name)
        weights = weights_for(plan, backbone, zoo)
        size = image_size_for(plan, image_size, weights.native_size, dataset.median_side)
        spec = ModelSpec.for_weights(weights, dataset.classes, image_size=size)
        if encoder:
            spec.text = text_settings(encoder)
        set_seed(seed)  # Python's random (timm's RandomResizedCrop draws from it), numpy and torch: the same run
        run.report(Progress("start", 0, 1, message=f"{plan.name} on {len(dataset.train)} training images"))
        target = adapting.target if adapting else None
        adapt = bool(adapting and adapting.for_strategy(plan.name).adapt)
        if plan.trains_backbone:
            warm_head = warm_head or parent_head(parent, weights, dataset.classes, plan)
            model, spec, outcome = fit_network(dataset, weights, spec, plan, epochs, batch_size, zoo, run,
                                               warm_head=warm_head, seed=seed, target=target, adapt=adapt,
                                               balance=balancing)
            if adapt and adapting.labelled:  # the same training without adaptation, to measure the difference
                set_seed(seed)
                twin = fit_network(dataset, weights, spec, plan, epochs, batch_size, zoo, run, warm_head=warm_head,
                                   seed=seed, target=target, adapt=False, balance=balancing)[2]
                outcome.logits["target_unadapted"] = twin.logits["target"]
        else:
            model, spec, outcome = fit_frozen(dataset, weights, spec, plan, epochs, batch_size, zoo, run,
                                              balance=balancing, target=target, adapt=adapt)
        return Fitted(plan, weights, model, spec, outcome, seconds=time.monotonic() - begun)

    advice = None
    if plan is None:  # auto: the frozen strategies on one cached pass first, then maybe a trainable one
        from transfer.auto import staged_search

        fitted, advice = staged_search(
            dataset, train, backbone=backbone, zoo=zoo, image_size=image_size, epochs=epochs, batch_size=batch_size,
            budget_left=lambda: max_seconds - (time.monotonic() - started) if max_seconds else None, run=run,
            seed=seed)
    else:
        fitted = train(plan.name)
    plan, weights, spec, outcome = fitted.plan, fitted.weights, fitted.spec, fitted.outcome
    adapting = adapting.for_strategy(plan.name) if adapting else None
    notes = [sentence for sentence in (balancing.sentence(), adapting.sentence() if adapting else "") if sentence]
    if advice is not None:
        advice["reasons"] = [*advice["reasons"], *notes]
    model = fitted.model.cpu().float()  # saved and handed back in float32 on the CPU, whatever trained it

    # metrics on the held-out test split when there is one, else on validation
    split = "test" if dataset.test else "val"
    metrics = classification_metrics(outcome.labels[split], outcome.logits[split].argmax(1).tolist(), spec.label_names)
    val_metrics = metrics if split == "val" else classification_metrics(
        outcome.labels["val"], outcome.logits["val"].argmax(1).tolist(), spec.label_names)
    errors = error_report(dataset.splits()[split], outcome.labels[split], outcome.logits[split], spec.label_names,
                          split)
    trainable, total = outcome.parameters or count_parameters(model)
    name = engine.share(name or _default_name(dataset, plan))  # one name, the main process's
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
        "errors": errors,
        "history": outcome.history,
        "details": outcome.details,
        "ablation": outcome.ablation,
        "text": {"encoder": encoder, "report": dataset.text_report} if encoder else None,
        "parameters": {"trainable": trainable, "total": total},
        "stopped_by_budget": run.budget_hit,
        "advice": advice,
        "balance": balancing.to_json(),
        "adaptation": adapting.report(plan.trains_backbone, outcome.logits, outcome.labels) if adapting else None,
        **lineage_info(parent),
        "settings": {"image_size": spec.image_size, "epochs": outcome.epochs, "batch_size": batch_size,
                     "max_seconds": max_seconds, "seed": seed, "val_fraction": val_fraction,
                     **engine.describe()},  # device, precision, processes, workers, threads: results depend on them
        "train_seconds": train_seconds,
        "versions": {"transfer-zoo": package_version("transfer-zoo"), "torch": torch.__version__,
                     "timm": package_version("timm")},
        **(extra_info or {}),
    }
    run.report(Progress("save", 0, 1, message=f"saving {name}"))
    path = zoo_dir(zoo) / name
    if engine.is_main:  # one process writes the zoo (atomically); the others wait until it is there
        path = save_model(model, spec, info, name=name, zoo=zoo, overwrite=overwrite)
    engine.wait()
    run.report(Progress("save", 1, 1, message=f"saved {name}"))
    return FitResult(
        name=name, path=path, strategy=plan.name, backbone=backbone, classes=list(spec.label_names),
        num_train=len(dataset.train), num_val=len(dataset.val), num_test=len(dataset.test),
        metrics=metrics, metrics_split=split, train_seconds=train_seconds, history=outcome.history,
        skipped=list(dataset.skipped) + [(f"target domain: {file}", reason) for file, reason
                                           in (adapting.target.skipped if adapting else [])],
        warnings=list(dataset.warnings), trainable_parameters=trainable,
        total_parameters=total, image_size=spec.image_size, details=outcome.details,
        ablation=outcome.ablation, stopped_by_budget=run.budget_hit, advice=advice,
        val_accuracy=round(val_metrics["accuracy"], 4), errors=errors, balance=info["balance"],
        adaptation=info["adaptation"], parent=info.get("parent"), notes=notes, model=model,
    )


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


# --- helpers -----------------------------------------------------------------------------------------------


def weights_for(plan: Strategy, backbone: str, zoo) -> Weights:
    """The weights a fit of `plan` starts from (from scratch: the architecture only)."""
    if plan.pretrained:
        return resolve_weights(backbone, zoo=zoo)
    # from scratch: only the architecture matters; nothing is downloaded
    if backbone.startswith(("zoo:", "hf-hub:")) or "@" in backbone or backbone.endswith(".safetensors"):
        return random_weights(resolve_weights(backbone, zoo=zoo).architecture)
    return random_weights(backbone)


def parent_head(parent: dict[str, Any] | None, weights: Weights, classes: list[str], plan: Strategy):
    """A continued zoo model's own head, when the new data has exactly its classes (fine-tune then
    starts from it instead of warming a new one up); else None."""
    if parent is None or not plan.head_warmup or tuple(weights.label_names) != tuple(classes):
        return None
    return create_backbone(weights).get_classifier()  # the checkpoint's classifier, as trained


def _default_name(dataset: Dataset, plan: Strategy) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-._") or "model"
    return f"{stem[:40]}-{plan.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
