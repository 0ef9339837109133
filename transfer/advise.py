"""Recommend a transfer strategy from the data: how much of it there is, and how much it looks like
the backbone's pretraining data.

    from transfer.advise import advise
    advice = advise("path/to/images", budget_seconds=120)
    advice.strategy, advice.reasons          # "shallow", ["You have 320 training images ...", ...]

The classic guide (`transfer.strategies`) picks by SIZE and SIMILARITY; both are measured here.

  size        training images per class (median and smallest) and in total.
  similarity  two measurements from one frozen pass of the backbone, the same cached pass the frozen
              strategies use (`transfer.features`), so advising and then fitting `feature-extractor`
              or `shallow` runs the backbone once per image in all:
              - feature shift: each BatchNorm layer of a pretrained network stores the per-channel
                mean and variance of its input over the pretraining images. The pass records the
                same statistics on the user's images (hooks on every BatchNorm layer, on a 4x4 lattice
                of positions per map), and the shift is the KL divergence between the two, per
                channel as Gaussians: the median over channels, averaged over layers. 0 means "looks
                exactly like the pretraining data". Measured on the bundled EfficientNet-Lite0: crops
                of photos 0.06-0.14 at 64-224 px, grey photographed textures 0.21, 8x8 handwritten
                digits 0.28-0.45; up to `SHIFT_SIMILAR` (0.2) counts as similar.
              - depth probe: a quick 5-fold cross-validated ridge classifier on each stage's pooled
                features and on the final features. When the last, most ImageNet-specific features
                separate the classes clearly worse than an earlier stage's, the deep layers do not
                suit this data (and `shallow`, which keeps the early stages, does).

The time estimates are `estimate_seconds`'s cost model scaled by the measured speed: how much longer
than the model predicts the advice's own feature pass took (a busy or slower computer), so the budget
rule works with what this machine does right now.

`choose_strategy` turns those numbers, per-strategy time estimates and the budget into a strategy
and two or three plain sentences. It is a pure function of the numbers, so the rule is tested as a
table of cases.

Large data is probed on a stratified sample (at most `PROBE_PER_CLASS` images per class): whole-network
strategies usually suit it, and they would not reuse a full pass at the frozen strategies' size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from transfer import DataError
from transfer.data import Dataset, load_dataset
from transfer.features import cached_features, feature_pass
from transfer.strategies import STRATEGIES, estimate_pass_seconds, estimate_seconds
from transfer.train import Progress, ProgressCallback, Run
from zoo import zoo_dir
from zoo.model import ModelSpec, batchnorm_pairs
from zoo.weights import DEFAULT_BACKBONE, Weights, create_backbone, resolve_weights

log = logging.getLogger(__name__)

# --- the rule's thresholds ------------------------------------------------------------------------------
LARGE_PER_CLASS = 100  # median training images per class from which training the whole network pays off
SCRATCH_PER_CLASS = 1000  # ... from which a random start can catch up with pretrained weights
SHIFT_SIMILAR = 0.2  # feature shift up to which the images count as like the pretraining data
DEPTH_MARGIN = 0.02  # the final features may trail the best earlier stage by this much and still suit
EASY_ACCURACY = 0.98  # frozen features already separate the classes this well: training more adds little

# --- the measurements -------------------------------------------------------------------------------------
PROBE_PER_CLASS = 50  # large data: images per class (train + val) in the sample that is probed
PROBE_MAX_IMAGES = 2000  # most images the ridge probe fits on (stratified sample of the features)
PROBE_FOLDS = 5
SHIFT_RECHECK_IMAGES = 128  # features cached by a plain fit (no shift recorded): images re-run for the shift
# a pass the cost model puts under this many seconds is mostly fixed costs (building and folding the
# model, the first batch's set-up): timing it says little about this machine's speed per image
SPEED_MIN_SECONDS = 2.0
SPEED_RANGE = (0.25, 20.0)  # measured slowness is clamped to this range before it scales the estimates
GRID = 4  # BatchNorm statistics are sampled on a GRID x GRID lattice of positions per feature map: cheap
# next to the convolutions, and still thousands of samples per channel over a few batches

PLAIN_WORDS = {
    "feature-extractor": "train only a new final layer on top of the pretrained network",
    "shallow": "keep only the network's early, generic layers and train a new final layer on them",
    "fine-tune": "retrain the whole pretrained network gently, its early layers slowest",
    "from-scratch": "train the whole network from a random start",
}


@dataclass(frozen=True)
class SizeMeasure:
    num_train: int  # training images (the split the model learns from)
    num_classes: int
    median_per_class: float  # training images per class, median over classes
    smallest_class: int  # training images of the rarest class

    @property
    def size_class(self) -> str:
        """ "small" | "large" | "very large", by the median images per class."""
        if self.median_per_class >= SCRATCH_PER_CLASS:
            return "very large"
        return "large" if self.median_per_class >= LARGE_PER_CLASS else "small"


@dataclass(frozen=True)
class SimilarityMeasure:
    feature_shift: float | None  # mean over BatchNorm layers of the median per-channel KL; None: no BatchNorm
    stage_accuracy: tuple[float, ...]  # cross-validated probe accuracy per backbone stage (may be empty)
    final_accuracy: float  # ... on the final (pre-logits) features, what feature-extractor trains on
    probe_images: int  # images the probe was fitted on (train + val; test is never looked at)
    image_size: int  # input size of the pass

    @property
    def depth_gain(self) -> float | None:
        """Final-feature accuracy minus the best earlier stage's; negative: the deep layers do not help."""
        return round(self.final_accuracy - max(self.stage_accuracy), 4) if self.stage_accuracy else None

    @property
    def best_accuracy(self) -> float:
        return max((*self.stage_accuracy, self.final_accuracy))

    @property
    def best_stage(self) -> int | None:
        """The stage whose features separate the classes best (None: the final features do)."""
        if not self.stage_accuracy or self.final_accuracy >= max(self.stage_accuracy):
            return None
        return self.stage_accuracy.index(max(self.stage_accuracy))


@dataclass(frozen=True)
class Choice:
    strategy: str
    preference: tuple[str, ...]  # every strategy, best first for this data, before the budget
    similar: bool
    over_budget: tuple[str, ...]  # preferred strategies passed over because their estimate exceeds the budget
    reasons: tuple[str, ...]  # two or three sentences for a non-expert


@dataclass
class Advice:
    """What `advise` returns: the choice, the numbers behind it and the reasons, as plain data."""

    strategy: str
    reasons: list[str]
    size: dict[str, Any]  # SizeMeasure fields + size_class
    similarity: dict[str, Any]  # SimilarityMeasure fields + similar, depth_gain, best_stage
    estimated_seconds: dict[str, float]  # per strategy, for the fit that would follow
    speed: float  # how much slower than the cost model this machine ran the pass (1.0: not measured)
    budget_seconds: float | None
    preference: list[str]
    over_budget: list[str]
    backbone: str
    image_size: int | None  # the size the fit will use (None: each strategy's default)
    seconds: float  # how long advising took
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def explanation(self) -> str:
        return " ".join(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the rule: a pure function of the numbers ----------------------------------------------------------


def is_similar(similarity: SimilarityMeasure) -> bool:
    """Like the pretraining data: small feature shift AND the deepest features suit it (as far as measured)."""
    shift_close = similarity.feature_shift is None or similarity.feature_shift <= SHIFT_SIMILAR
    depth_suits = similarity.depth_gain is None or similarity.depth_gain >= -DEPTH_MARGIN
    return shift_close and depth_suits


def preference_order(size_class: str, similar: bool, easy: bool) -> tuple[str, ...]:
    """Every strategy, best first, for data of this size and similarity."""
    frozen = ("feature-extractor", "shallow") if similar else ("shallow", "feature-extractor")
    if size_class == "small" or easy:
        return (*frozen, "fine-tune", "from-scratch")
    if similar or size_class == "large":
        return ("fine-tune", *frozen, "from-scratch")
    return ("from-scratch", "fine-tune", *frozen)  # very large and different


def choose_strategy(
    size: SizeMeasure,
    similarity: SimilarityMeasure,
    estimated_seconds: dict[str, float],
    budget_seconds: float | None = None,
) -> Choice:
    """The strategy for these numbers, and why. Never one whose estimate exceeds the budget, unless
    none fits: then the quickest (whose training stops early to keep to the budget)."""
    similar = is_similar(similarity)
    easy = size.size_class != "small" and similarity.best_accuracy >= EASY_ACCURACY
    preference = preference_order(size.size_class, similar, easy)
    fits = [name for name in preference if budget_seconds is None or estimated_seconds[name] <= budget_seconds]
    strategy = fits[0] if fits else min(preference, key=lambda name: estimated_seconds[name])
    over_budget = preference[:preference.index(strategy)] if budget_seconds is not None else ()
    reasons = (
        _size_sentence(size),
        _similarity_sentence(similarity, similar),
        _choice_sentence(strategy, over_budget, easy, estimated_seconds, budget_seconds, bool(fits)),
    )
    return Choice(strategy, preference, similar, tuple(over_budget), reasons)


def _size_sentence(size: SizeMeasure) -> str:
    verdict = {
        "small": "a small dataset, too small to retrain a whole network safely",
        "large": "enough to retrain a whole network",
        "very large": "plenty, even for training a network from scratch",
    }[size.size_class]
    return (f"You have {size.num_train} training images in {size.num_classes} classes, about "
            f"{size.median_per_class:.0f} per class: {verdict}.")


def _similarity_sentence(similarity: SimilarityMeasure, similar: bool) -> str:
    """The verdict, then the evidence: each clause says whether it agrees ("and") or not ("but")."""
    clauses = []  # (clause, says similar)
    if similarity.feature_shift is not None:
        close = similarity.feature_shift <= SHIFT_SIMILAR
        clauses.append((f"its internal statistics on them are {'close to' if close else 'far from'} those on its "
                        f"training photos (shift {similarity.feature_shift:.2f}, where up to {SHIFT_SIMILAR:g} counts "
                        "as close)", close))
    if similarity.depth_gain is not None and similarity.depth_gain < -DEPTH_MARGIN:
        clauses.append((f"its early layers tell your classes apart better than its last ones "
                        f"({max(similarity.stage_accuracy):.0%} vs {similarity.final_accuracy:.0%} in a quick test)",
                        False))
    else:
        clauses.append((f"its last layers tell your classes apart as well as any "
                        f"({similarity.final_accuracy:.0%} in a quick test)", True))
    evidence = clauses[0][0]
    for clause, agrees in clauses[1:]:
        evidence += (", and " if agrees == clauses[0][1] else ", but ") + clause
    looks = "look like" if similar else "look unlike"
    return f"Your images {looks} the photos the pretrained network learned from: {evidence}."


def _choice_sentence(strategy: str, over_budget: tuple[str, ...], easy: bool,
                     estimated_seconds: dict[str, float], budget_seconds: float | None, fits: bool) -> str:
    sentence = f"So: {strategy}, which will {PLAIN_WORDS[strategy]} (about {_duration(estimated_seconds[strategy])})."
    if easy and not STRATEGIES[strategy].trains_backbone:
        sentence += (" The pretrained features already separate your classes almost perfectly, so retraining the "
                     "whole network would cost time without gaining much.")
    if over_budget:
        skipped = ", ".join(f"{name} (about {_duration(estimated_seconds[name])})" for name in over_budget)
        if fits:
            verb = "exceeds" if len(over_budget) == 1 else "each exceed"
            sentence += (f" Better suited would be {skipped}, but that {verb} your "
                         f"{_duration(budget_seconds)} budget, so this is the best that fits.")
        else:
            sentence += (f" No strategy fits your {_duration(budget_seconds)} budget; this is the quickest, and its "
                         "training stops early to keep to the budget. Allow more time for a better model.")
    return sentence


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unlimited"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


# --- measuring --------------------------------------------------------------------------------------------


def advise(
    data: str | Path | Dataset,
    *,
    backbone: str = DEFAULT_BACKBONE,
    zoo: str | Path | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    budget_seconds: float | None = None,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Advice:
    """Measure `data` against `backbone` and recommend a strategy (see the module docstring).

    image_size / epochs: what the fit will be given (None: each strategy's default); the frozen pass
    runs at the frozen strategies' size, so their fit finds its features in the cache.
    budget_seconds: the time the fit may take; strategies estimated to need more are passed over.
    should_stop: polled during the pass; True raises `transfer.Cancelled`.
    """
    started = time.monotonic()
    if image_size is not None and not 16 <= image_size <= 1024:
        raise DataError(f"image size {image_size} px is out of range; use 16-1024 (for example 224)")
    run = Run(progress=progress, should_stop=should_stop)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_fraction=val_fraction, seed=seed)
    weights = resolve_weights(backbone, zoo=zoo)
    size = measure_size(dataset)
    frozen_size = image_size or native_size(weights)
    whole = size.size_class == "small"  # the frozen fit will want every image's features: compute them all
    probed = dataset if whole else stratified_sample(dataset, PROBE_PER_CLASS, seed)
    similarity, speed = measure_similarity(probed, weights, frozen_size, batch_size=batch_size, zoo=zoo, run=run)

    estimates = estimate_fits(dataset, weights, image_size=image_size, epochs=epochs,
                              cached_size=frozen_size if whole else None, speed=speed or 1.0)
    choice = choose_strategy(size, similarity, estimates, budget_seconds)
    advice = Advice(
        strategy=choice.strategy,
        reasons=list(choice.reasons),
        size={**asdict(size), "size_class": size.size_class},
        similarity={**asdict(similarity), "similar": choice.similar, "depth_gain": _rounded(similarity.depth_gain),
                    "best_stage": similarity.best_stage},
        estimated_seconds=estimates,
        speed=speed or 1.0,
        budget_seconds=budget_seconds,
        preference=list(choice.preference),
        over_budget=list(choice.over_budget),
        backbone=backbone,
        image_size=image_size,
        seconds=round(time.monotonic() - started, 2),
        thresholds={"large_per_class": LARGE_PER_CLASS, "scratch_per_class": SCRATCH_PER_CLASS,
                    "shift_similar": SHIFT_SIMILAR, "depth_margin": DEPTH_MARGIN, "easy_accuracy": EASY_ACCURACY},
    )
    log.debug("auto: %s. %s", advice.strategy, advice.explanation)
    run.report(Progress("advice", 1, 1, message=f"auto chose {advice.strategy}: {advice.explanation}"))
    return advice


def estimate_fits(dataset: Dataset, weights: Weights, *, image_size: int | None = None, epochs: int | None = None,
                  cached_size: int | None = None, speed: float = 1.0) -> dict[str, float]:
    """Estimated seconds of a fit of `dataset` under each strategy (`estimate_seconds`).

    cached_size: the input size at which the frozen features of every image are already cached.
    speed: the measured slowness of this machine (see `Advice.speed`)."""
    estimates = {}
    for name, plan in STRATEGIES.items():
        fit_size = image_size or plan.image_size or native_size(weights)
        cached = fit_size == cached_size and (not plan.trains_backbone or plan.head_warmup)
        estimates[name] = round(estimate_seconds(
            name, num_train=len(dataset.train), num_eval=len(dataset.val) + len(dataset.test), image_size=fit_size,
            epochs=epochs, architecture=weights.architecture, features_cached=cached, speed=speed), 1)
    return estimates


def native_size(weights: Weights) -> int:
    """The input size the weights were trained at: what the frozen strategies use by default."""
    return int(weights.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def measure_size(dataset: Dataset) -> SizeMeasure:
    per_class = Counter(sample.label for sample in dataset.train)
    counts = [per_class.get(index, 0) for index in range(len(dataset.classes))]
    return SizeMeasure(num_train=len(dataset.train), num_classes=len(dataset.classes),
                       median_per_class=float(statistics.median(counts)), smallest_class=min(counts))


def stratified_sample(dataset: Dataset, per_class: int, seed: int = 0) -> Dataset:
    """A copy of `dataset` with at most `per_class` images per class (train and val in proportion), no test."""
    rng = random.Random(seed)

    def take(samples: list, share: int) -> list:
        by_class: dict[int, list] = {}
        for sample in samples:
            by_class.setdefault(sample.label, []).append(sample)
        kept = []
        for members in by_class.values():
            kept += rng.sample(members, min(len(members), max(1, share)))
        return kept

    val_share = max(1, round(per_class * len(dataset.val) / max(1, len(dataset.train) + len(dataset.val))))
    return replace(dataset, train=take(dataset.train, per_class - val_share), val=take(dataset.val, val_share),
                   test=[], skipped=list(dataset.skipped), warnings=list(dataset.warnings))


def measure_similarity(dataset: Dataset, weights: Weights, image_size: int, *, batch_size: int = 32,
                       zoo: str | Path | None = None, run: Run | None = None) -> tuple[SimilarityMeasure, float | None]:
    """Feature shift and per-stage probe accuracies of `dataset` (train + val; test is never looked at),
    and how much longer than `estimate_pass_seconds` its backbone pass took (None: not measured).

    The pass is the frozen fits' own (`transfer.fit`'s cached features), with BatchNorm hooks on: a
    cache hit costs no pass, and the shift and speed measured when it was filled are read back."""

    run = run or Run()
    model = create_backbone(weights).eval().to(memory_format=torch.channels_last)
    spec = ModelSpec.for_weights(weights, dataset.classes, image_size=image_size)
    began = time.monotonic()
    with BatchNormStatistics(model) as recorder:
        features, labels, key = cached_features(dataset, model, weights, spec, batch_size, zoo, run)
    if recorder.images:  # the pass ran here
        measured = _pass_measurements(recorder, time.monotonic() - began, image_size, weights)
    else:
        measured = _stored_measurements(key, zoo)
    if measured is None and recorder.layers:  # the cache came from a plain fit: re-run a sample to measure
        sample = stratified_sample(dataset, max(2, SHIFT_RECHECK_IMAGES // len(dataset.classes)))
        began = time.monotonic()
        with BatchNormStatistics(model) as recorder:
            feature_pass(sample, sample.train + sample.val, model, spec, batch_size, run)
        measured = _pass_measurements(recorder, time.monotonic() - began, image_size, weights)
    if recorder.images:
        _store_measurements(key, zoo, measured)  # a later advice on the cached features reads them
    shift, speed = (measured["feature_shift"], measured["speed"]) if measured else (None, None)

    train, val = features["train"], features["val"]
    targets = torch.tensor(labels["train"] + labels["val"])
    candidates = [torch.cat([train.stages[k], val.stages[k]]) for k in range(len(train.stages))]
    candidates.append(torch.cat([train.final, val.final]))  # last: what feature-extractor trains on
    accuracies = []
    for done, candidate in enumerate(candidates):
        run.check()
        accuracies.append(round(probe_accuracy(candidate, targets, len(dataset.classes)), 4))
        run.report(Progress("probe", done + 1, len(candidates), message="how well each stage separates the classes"))
    similarity = SimilarityMeasure(feature_shift=_rounded(shift), stage_accuracy=tuple(accuracies[:-1]),
                                   final_accuracy=accuracies[-1], probe_images=len(targets), image_size=image_size)
    return similarity, speed


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, folds: int = PROBE_FOLDS,
                   max_images: int = PROBE_MAX_IMAGES, seed: int = 0) -> float:
    """Cross-validated accuracy of a ridge classifier on standardised features (stratified folds).

    Closed form, so it is deterministic and takes milliseconds; a rough but fair yardstick to
    compare one stage's features with another's."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    if len(order) > max_images:
        order = order[:max_images]
    features, labels = features[order].double(), labels[order]
    fold = torch.empty(len(labels), dtype=torch.long)
    for label in labels.unique():  # deal each class's images round the folds: every fold has every class
        members = (labels == label).nonzero().flatten()
        fold[members] = torch.arange(len(members)) % folds
    correct = 0
    for k in range(folds):
        held_out = fold == k
        if held_out.all() or not held_out.any():
            continue
        weight, bias = _ridge_fit(features[~held_out], labels[~held_out], num_classes)
        predicted = (features[held_out] @ weight + bias).argmax(1)
        correct += (predicted == labels[held_out]).sum().item()
    return correct / len(labels)


def _ridge_fit(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression onto +-1 class targets, on standardised x; returns (weight, bias) for raw x."""
    mean, std = x.mean(0), x.std(0, correction=0) + 1e-6
    z = (x - mean) / std
    targets = torch.nn.functional.one_hot(y, num_classes).double() * 2 - 1
    offset = targets.mean(0)
    ridge = float(z.shape[1])  # about one unit per feature: strong enough for few images, many features
    if len(z) < z.shape[1]:  # dual form: an n x n system
        alpha = torch.linalg.solve(z @ z.T + ridge * torch.eye(len(z), dtype=z.dtype), targets - offset)
        coefficients = z.T @ alpha
    else:
        coefficients = torch.linalg.solve(z.T @ z + ridge * torch.eye(z.shape[1], dtype=z.dtype), z.T @ (targets - offset))
    weight = coefficients / std[:, None]
    return weight, offset - mean @ weight


class BatchNormStatistics:
    """Records the per-channel mean and variance of every BatchNorm layer's input while the model runs,
    and compares them with the layers' running statistics (the pretraining data's).

    A norm's input is the output of the convolution before it, so that is where it is watched: the
    frozen pass folds the norms into those convolutions (`zoo.model.fused_for_inference`, which
    copies the hooks along), and the folded output is mapped back to the norm's input on the few
    grid positions sampled. A norm that follows no convolution is watched directly (and not folded)."""

    def __init__(self, model: torch.nn.Module):
        self.layers = [module for module in model.modules()
                       if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_var is not None]
        conv_before = {id(model.get_submodule(norm)): model.get_submodule(conv) for conv, norm in batchnorm_pairs(model)}
        self._watched = [conv_before.get(id(layer), layer) for layer in self.layers]
        self.sums: dict[int, list] = {}  # layer index -> [count, sum, sum of squares] (float64)
        self.images = 0
        self._handles: list = []

    def __enter__(self) -> "BatchNormStatistics":
        for index, (layer, watched) in enumerate(zip(self.layers, self._watched)):
            record = self._recorder(index)
            if watched is layer:
                self._handles.append(layer.register_forward_pre_hook(lambda module, inputs, r=record: r(module, inputs[0])))
            else:
                self._handles.append(watched.register_forward_hook(lambda module, inputs, output, r=record: r(module, output)))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _recorder(self, index: int) -> Callable:
        def record(module: torch.nn.Module, activation: torch.Tensor) -> None:
            if activation.dim() != 4:
                return
            if index == 0:
                self.images += activation.shape[0]
            step = max(1, math.ceil(min(activation.shape[2:]) / GRID))
            grid = activation[:, :, step // 2::step, step // 2::step].permute(0, 2, 3, 1).reshape(-1, activation.shape[1])
            folded = getattr(module, "folded_norm", None)
            if folded is not None:  # a folded convolution: undo the norm's affine map
                scale, shift = folded
                grid = (grid - shift) / scale
            count, total, squares = self.sums.get(index, (0, 0.0, 0.0))
            self.sums[index] = [count + len(grid), total + grid.sum(0, dtype=torch.float64),
                                squares + grid.square().sum(0, dtype=torch.float64)]

        return record

    def feature_shift(self) -> float | None:
        """Mean over layers of the median over channels of KL(data || pretraining), as Gaussians."""
        per_layer = []
        for index, layer in enumerate(self.layers):
            if index not in self.sums:
                continue
            count, total, squares = self.sums[index]
            mean = total / count
            variance = (squares / count - mean * mean).clamp_min(layer.eps)
            running_mean, running_var = layer.running_mean.double(), layer.running_var.double() + layer.eps
            divergence = 0.5 * (torch.log(running_var / variance)
                                + (variance + (mean - running_mean) ** 2) / running_var - 1)
            per_layer.append(divergence.median().item())
        return sum(per_layer) / len(per_layer) if per_layer else None


def _pass_measurements(recorder: BatchNormStatistics, seconds: float, image_size: int,
                       weights: Weights) -> dict[str, Any]:
    """What a backbone pass tells: the feature shift, and its speed against the cost model."""
    speed = None
    modelled = estimate_pass_seconds(recorder.images, image_size=image_size, architecture=weights.architecture)
    if modelled >= SPEED_MIN_SECONDS:
        speed = round(min(max(seconds / modelled, SPEED_RANGE[0]), SPEED_RANGE[1]), 2)
    return {"feature_shift": recorder.feature_shift(), "speed": speed, "images": recorder.images}


def _measurements_file(key: str, zoo) -> Path:
    return zoo_dir(zoo) / "cache" / "advice" / f"{key}.json"


def _stored_measurements(key: str, zoo) -> dict[str, Any] | None:
    """What the pass that filled feature cache `key` measured, if an advice ran it (else None)."""
    try:
        stored = json.loads(_measurements_file(key, zoo).read_text())
        return {"feature_shift": stored["feature_shift"], "speed": stored["speed"], "images": int(stored["images"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_measurements(key: str, zoo, measured: dict[str, Any]) -> None:
    path = _measurements_file(key, zoo)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(measured))
    os.replace(temporary, path)


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)
