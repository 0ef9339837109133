"""The trainable strategies: fine-tune and from-scratch, every layer trains on the images.

fine-tune has two phases: the head warms up on the frozen backbone's cached features (so a random
head does not push the pretrained layers around), then every layer trains with layer-wise learning
rate decay (`transfer.train`). from-scratch runs the second phase only, from random weights.
Each image is decoded once, at the fit's size, and augmented from there every epoch.
"""

from __future__ import annotations

from typing import Any

import torch

from transfer.data import drop_failed
from transfer.features import cache_key, cached_features, split_texts
from transfer.heads import HeadConfig, train_fusion_head, train_linear_head
from transfer.loading import decode_images
from transfer.outcome import Outcome, ablation
from transfer.progress import Progress, Run
from transfer.strategies import WARMUP_HEAD_EPOCHS, Strategy
from transfer.train import NetworkConfig, eval_crops, predict_logits, train_network
from zoo.model import ImageTextClassifier
from zoo.weights import create_backbone


def fit_network(dataset, weights, spec, plan: Strategy, epochs, batch_size, zoo, run: Run,
                warm_head: torch.nn.Linear | None = None) -> tuple[Any, Any, Outcome]:
    """(model, spec, outcome) of a trainable strategy.

    warm_head: a head already trained on this backbone's frozen final features (auto's
    feature-extractor stage): phase 1 starts from it instead of training one (image-only models)."""
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
        text = split_texts(dataset, spec.text["encoder"], zoo, run)
    history: list[dict[str, Any]] = []
    fingerprint = cache_key(weights.fingerprint, spec, hashes)
    if plan.head_warmup and warm_head is not None and text is None:
        model.get_classifier().load_state_dict(warm_head.state_dict())  # phase 1 done already
    elif plan.head_warmup:
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
    measured = None
    if text is not None:
        measured = ablation(
            lambda image, with_text: predict_logits(
                model, val_crops if image else None, spec,
                text=text["val"] if with_text else text["val"].without_text()),
            labels["val"],
        )
    details = {"lr": plan.lr, "layer_decay": plan.layer_decay}
    return model, spec, Outcome(logits, labels, history, config.epochs, fingerprint, details, ablation=measured)
