"""The trainable strategies: fine-tune and from-scratch, every layer trains on the images.

fine-tune has two phases: the head warms up on the frozen backbone's cached features (so a random
head does not push the pretrained layers around), then every layer trains with layer-wise learning
rate decay (`transfer.train`). from-scratch runs the second phase only, from random weights.
Every image is read once first (`transfer.loading.scan_images`: hashes, failures, and the decoded
images when they fit in memory), then streamed to the training loop by data loaders.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from typing import Any

import torch

from transfer.balance import Balance, choose_balance, train_counts
from transfer.data import Dataset, drop_failed
from transfer.feature_cache import cache_key
from transfer.features import cached_features, split_texts
from transfer.heads import HeadConfig, train_fusion_head, train_linear_head
from transfer.loading import ImageFiles, loader, scan_images
from transfer.outcome import Outcome, ablation
from transfer.progress import Progress, Run
from transfer.strategies import WARMUP_HEAD_EPOCHS, Strategy
from transfer.train import (
    EVAL_BATCH,
    NetworkConfig,
    evaluate,
    text_logits,
    train_network,
)
from zoo.model import ImageTextClassifier, center_crop_uint8
from zoo.weights import create_backbone

log = logging.getLogger(__name__)

def fit_network(dataset, weights, spec, plan: Strategy, epochs, batch_size, zoo, run: Run,
                warm_head: torch.nn.Linear | None = None, seed: int = 0, target: Dataset | None = None,
                adapt: bool = False, balance: Balance | None = None) -> tuple[Any, Any, Outcome]:
    """(model, spec, outcome) of a trainable strategy.

    warm_head: a head already trained on this backbone's frozen final features (auto's
    feature-extractor stage): phase 1 starts from it instead of training one (image-only models).
    target: images of the target domain (`transfer.target`); adapt: train on them too
    (`transfer.adapt`). A labelled target's logits come back as outcome.logits["target"].
    balance: how lopsided classes are handled (`transfer.balance`; default: class weights)."""
    engine = run.engine
    samples = dataset.train + dataset.val + dataset.test
    scan = scan_images(dataset, samples, shorter_side=spec.resized_side, engine=engine, should_stop=run.should_stop,
                       on_progress=lambda done, total: run.report(Progress("read", done, total, message="reading images")))
    drop_failed(dataset, {samples[row].relpath: error for row, error in scan.failed.items()})
    scan = scan.without(scan.failed)  # aligned with the dataset's samples again
    files, labels, row = {}, {}, 0
    for split, members in dataset.splits().items():
        kept = scan.images[row:row + len(members)] if scan.images is not None else None
        files[split] = ImageFiles(dataset, members, shorter_side=spec.resized_side, images=kept,
                                  transform=partial(center_crop_uint8, spec=spec))
        labels[split] = [sample.label for sample in members]
        row += len(members)
    log.info("%s images %s", row, "kept in memory" if scan.images is not None else "read from disk each epoch")
    balance = balance or choose_balance(train_counts(dataset), "weights")
    class_weights = balance.class_weights(labels["train"], spec.num_classes)
    sample_weights = balance.sample_weights(labels["train"], spec.num_classes)

    backbone = create_backbone(weights, num_classes=spec.num_classes)
    model, text = backbone, None
    if spec.text is not None:
        backbone.reset_classifier(0)
        model = ImageTextClassifier(backbone, image_dim=backbone.num_features, num_classes=spec.num_classes,
                                    **spec.text)
        text = split_texts(dataset, spec.text["encoder"], zoo, run)
    history: list[dict[str, Any]] = []
    fingerprint = cache_key(weights.fingerprint, spec, scan.hashes)
    if plan.head_warmup and warm_head is not None and text is None:
        model.get_classifier().load_state_dict(warm_head.state_dict())  # phase 1 done already
    elif plan.head_warmup:
        # phase 1: the head learns on the frozen backbone's features (one cached pass), so that a
        # random head does not push the pretrained layers around at the start of phase 2
        features, _, fingerprint = cached_features(dataset, backbone, weights, spec, batch_size, zoo, run, scan=scan)
        warmup_config = HeadConfig(lr=3e-3 if text is None else 1e-3, max_epochs=WARMUP_HEAD_EPOCHS)
        if text is None:
            head, warmup = train_linear_head(
                features["train"].final, torch.tensor(labels["train"]), features["val"].final,
                torch.tensor(labels["val"]), num_classes=spec.num_classes, class_weights=class_weights,
                sample_weights=sample_weights,
                config=warmup_config, run=run, stage="warm-up",
            )
            model.get_classifier().load_state_dict(head.state_dict())
        else:
            warmup = train_fusion_head(
                model, features["train"].final, text["train"], torch.tensor(labels["train"]),
                features["val"].final, text["val"], torch.tensor(labels["val"]),
                class_weights=class_weights, sample_weights=sample_weights, config=warmup_config, run=run,
                stage="warm-up",
            )
        history += [{**record, "phase": "warm-up"} for record in warmup]
    # phase 2 (from-scratch: the only phase): every layer trains
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    config_epochs = epochs or plan.epochs
    config = NetworkConfig(epochs=config_epochs, batch_size=batch_size, lr=plan.lr,
                           layer_decay=plan.layer_decay, warmup_epochs=plan.warmup_epochs,
                           freeze_bn_stats=plan.freeze_bn_stats, patience=plan.patience or config_epochs)
    if adapt:  # every layer adapts at the head's rate, and every epoch runs (see transfer.adapt)
        config = replace(config, layer_decay=None, patience=config_epochs)
    if target is not None:
        target_scan = scan_images(target, target.train, shorter_side=spec.resized_side, engine=engine,
                                  should_stop=run.should_stop)
        files["target"] = ImageFiles(target, [sample for row, sample in enumerate(target.train)
                                              if row not in target_scan.failed],
                                     shorter_side=spec.resized_side, transform=partial(center_crop_uint8, spec=spec),
                                     images=target_scan.without(target_scan.failed).images)
        labels["target"] = [sample.label for sample in files["target"].samples]
    history += [{**record, "phase": "train"} for record in train_network(
        model, files["train"], files["val"], spec=spec, config=config, class_weights=class_weights,
        sample_weights=sample_weights,
        run=run, train_text=text["train"] if text else None, val_text=text["val"] if text else None, seed=seed,
        target_files=files["target"] if target is not None and adapt else None,
    )]
    run.report(Progress("evaluate", 0, 1, message="evaluating"))

    def logits_of(split: str, image: bool = True, with_text: bool = True) -> torch.Tensor:
        split_text = None if text is None else text[split] if with_text else text[split].without_text()
        if not image:
            return text_logits(model, split_text, engine.device)
        if not files[split].samples:
            return torch.empty(0, spec.num_classes)
        data = loader(files[split], batch_size=EVAL_BATCH, engine=engine)
        return evaluate(model, data, files[split], spec, run, text=split_text)[0]

    logits = {"val": logits_of("val"), "test": logits_of("test")}
    if target is not None:
        files["target"].transform = partial(center_crop_uint8, spec=spec)
        logits["target"] = logits_of("target")
    measured = ablation(lambda image, with_text: logits_of("val", image, with_text), labels["val"]) if text else None
    details = {"lr": plan.lr, "layer_decay": plan.layer_decay, "images_in_memory": scan.images is not None}
    return model, spec, Outcome(logits, labels, history, config.epochs, fingerprint, details, ablation=measured)
