"""The frozen strategies: feature-extractor and shallow, a new head on cached backbone features.

Neither runs the backbone more than once per image: its features come from the cache
(`transfer.features`) or from one streamed pass that fills it. feature-extractor trains a linear
head on the final features; shallow probes every stage's pooled features, keeps the stage whose
head scores best on validation data (ties: the earlier, smaller one) and cuts the backbone there
with timm's `prune_intermediate_layers`. With text beside the images, the head is an image+text
fusion head on the same cached features.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from transfer.feature_cache import Features
from transfer.adapt import coral_transform
from transfer.balance import Balance, choose_balance, train_counts
from transfer.data import Dataset
from transfer.features import cached_features, features_of, split_texts
from transfer.heads import HeadConfig, train_fusion_head, train_linear_head
from transfer.outcome import Outcome, ablation
from transfer.progress import Progress, Run
from transfer.strategies import HEAD_EPOCHS, Strategy
from transfer.target import is_labelled
from zoo import ZooError
from zoo.model import ImageTextClassifier
from zoo.weights import create_backbone

log = logging.getLogger(__name__)


def fit_frozen(dataset, weights, spec, plan: Strategy, epochs, batch_size, zoo, run: Run,
               balance: Balance | None = None, target: Dataset | None = None,
               adapt: bool = False) -> tuple[Any, Any, Outcome]:
    """(model, spec, outcome) of a frozen strategy: the backbone (cut, for shallow) with its new head.

    balance: how lopsided classes are handled (`transfer.balance`; default: class weights).
    target: images of the target domain; adapt: train the head on the source features both as they
    are and re-coloured to the target's (CORAL, `transfer.adapt`). A labelled target's logits come
    back as outcome.logits["target"] (and, adapted, "target_unadapted": a plain head's)."""
    model = create_backbone(weights).eval().to(memory_format=torch.channels_last)
    features, labels, fingerprint = cached_features(dataset, model, weights, spec, batch_size, zoo, run)
    head_config = HeadConfig(lr=plan.lr, max_epochs=epochs or HEAD_EPOCHS)
    balance = balance or choose_balance(train_counts(dataset), "weights")
    class_weights = balance.class_weights(labels["train"], spec.num_classes)
    sample_weights = balance.sample_weights(labels["train"], spec.num_classes)
    target_features = None
    if target is not None:
        target_features, failed, hashes, _ = features_of(target, target.train, model, weights, spec, batch_size, zoo, run)
        labels["target"] = [sample.label for sample, digest in zip(target.train, hashes) if digest not in failed]

    def probe(select: Callable[[Features], torch.Tensor], stage: str, aligned: bool = adapt):
        train_x, val_x = select(features["train"]), select(features["val"])
        train_y, val_y, weights = torch.tensor(labels["train"]), torch.tensor(labels["val"]), sample_weights
        if aligned:  # CORAL: the source features as they are and re-coloured to the target's
            recolour = coral_transform(train_x, select(target_features))
            train_x, val_x = torch.cat([train_x, recolour(train_x)]), torch.cat([val_x, recolour(val_x)])
            train_y, val_y = train_y.repeat(2), val_y.repeat(2)
            weights = weights.repeat(2) if weights is not None else None
        return train_linear_head(train_x, train_y, val_x, val_y, num_classes=spec.num_classes,
                                 class_weights=class_weights, config=head_config, run=run, stage=stage,
                                 sample_weights=weights)

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
        return _fuse_on_cached(dataset, model, spec, features, labels, select, fingerprint, details, epochs, zoo, run,
                               (class_weights, sample_weights))
    model.get_classifier().load_state_dict(head.state_dict())
    model.pretrained_cfg = {**model.pretrained_cfg, **spec.data_config(), "num_classes": spec.num_classes}
    # the same head without CORAL, only when the target has labels to score both by
    plain = probe(select, "head", aligned=False)[0] if adapt and target is not None and is_labelled(target) else None
    with torch.inference_mode():
        logits = {split: head(select(features[split])) for split in ("train", "val", "test")}
        if target_features is not None:
            logits["target"] = head(select(target_features))
            if plain is not None:  # the same head without CORAL, to measure what adapting changed
                logits["target_unadapted"] = plain(select(target_features))
    trainable = sum(p.numel() for p in head.parameters())
    total = sum(p.numel() for p in model.parameters())
    log.info("training %s of %s parameters (%.2f%%): the new head", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model, spec, Outcome(logits, labels, history, len(history), fingerprint, details,
                                 parameters=(trainable, total))


def _fuse_on_cached(dataset, backbone, spec, features, labels, select, fingerprint, details, epochs, zoo, run: Run,
                    balancing: tuple):
    """Image+text on a frozen backbone: the fusion layers train on cached image and text features."""
    backbone.reset_classifier(0)
    model = ImageTextClassifier(backbone, image_dim=backbone.num_features, num_classes=spec.num_classes, **spec.text)
    text = split_texts(dataset, spec.text["encoder"], zoo, run)
    history = train_fusion_head(
        model, select(features["train"]), text["train"], torch.tensor(labels["train"]), select(features["val"]),
        text["val"], torch.tensor(labels["val"]), class_weights=balancing[0], sample_weights=balancing[1],
        config=HeadConfig(lr=1e-3, max_epochs=epochs or HEAD_EPOCHS), run=run, stage="fusion head",
    )

    def logits_for(split: str, image: bool = True, with_text: bool = True) -> torch.Tensor:
        inputs = text[split] if with_text else text[split].without_text()
        present = torch.full((len(labels[split]),), image, dtype=torch.bool)
        with torch.inference_mode():
            return model.fuse(select(features[split]), model.encode_text(inputs), present, inputs.present)

    logits = {split: logits_for(split) for split in ("train", "val", "test")}
    measured = ablation(lambda image, with_text: logits_for("val", image, with_text), labels["val"])
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("image."))
    log.info("training %s of %s parameters (%.2f%%): the fusion layers", f"{trainable:,}", f"{total:,}",
             100 * trainable / total)
    return model, spec, Outcome(logits, labels, history, len(history), fingerprint, details,
                                 parameters=(trainable, total), ablation=measured)
