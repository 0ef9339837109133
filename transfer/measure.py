"""Measuring data against a backbone: how much there is, how much it looks like the pretraining data.

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
                digits 0.28-0.45; up to `transfer.decide.SHIFT_SIMILAR` (0.2) counts as similar.
              - depth probe: a quick 5-fold cross-validated ridge classifier on each stage's pooled
                features and on the final features. When the last, most ImageNet-specific features
                separate the classes clearly worse than an earlier stage's, the deep layers do not
                suit this data (and `shallow`, which keeps the early stages, does).
  speed       how much longer than the cost model predicts the pass took (a busy or slower
              computer), so time estimates and budgets follow what this machine does right now.

Large data is probed on a stratified sample (at most `PROBE_PER_CLASS` images per class).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from transfer.data import Dataset
from transfer.decide import SimilarityMeasure, SizeMeasure
from transfer.features import cached_features, feature_pass
from transfer.progress import Progress, Run
from transfer.strategies import estimate_pass_seconds
from zoo import zoo_dir
from zoo.files import write_bytes_atomically
from zoo.model import ModelSpec, batchnorm_pairs
from zoo.weights import Weights, create_backbone

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
        measured = pass_measurements(recorder, time.monotonic() - began, image_size, weights)
    else:
        measured = _stored_measurements(key, zoo)
    if measured is None and recorder.layers:  # the cache came from a plain fit: re-run a sample to measure
        sample = stratified_sample(dataset, max(2, SHIFT_RECHECK_IMAGES // len(dataset.classes)))
        began = time.monotonic()
        with BatchNormStatistics(model) as recorder:
            feature_pass(sample, sample.train + sample.val, model, spec, batch_size, run)
        measured = pass_measurements(recorder, time.monotonic() - began, image_size, weights)
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
    similarity = SimilarityMeasure(feature_shift=rounded(shift), stage_accuracy=tuple(accuracies[:-1]),
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
            grid = grid.float().cpu()  # a few positions per map: summed in float64, which MPS lacks
            folded = getattr(module, "folded_norm", None)
            if folded is not None:  # a folded convolution: undo the norm's affine map
                scale, shift = folded
                grid = (grid - shift.cpu()) / scale.cpu()
            count, total, squares = self.sums.get(index, (0, 0.0, 0.0))
            self.sums[index] = [count + len(grid), total + grid.sum(0, dtype=torch.float64),
                                squares + grid.square().sum(0, dtype=torch.float64)]

        return record

    def moments(self, index: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) per channel of layer `index`'s input, as recorded."""
        count, total, squares = self.sums[index]
        mean = total / count
        return mean, (squares / count - mean * mean).clamp_min(eps)

    def feature_shift(self, reference: "BatchNormStatistics | None" = None) -> float | None:
        """Mean over layers of the median over channels of KL(data || reference), as Gaussians; the
        reference is the pretraining data (the layers' running statistics), or another recording."""
        per_layer = []
        for index, layer in enumerate(self.layers):
            if index not in self.sums or (reference is not None and index not in reference.sums):
                continue
            mean, variance = self.moments(index, layer.eps)
            if reference is None:
                base_mean, base_var = layer.running_mean.double(), layer.running_var.double() + layer.eps
            else:
                base_mean, base_var = reference.moments(index, layer.eps)
            divergence = 0.5 * (torch.log(base_var / variance) + (variance + (mean - base_mean) ** 2) / base_var - 1)
            per_layer.append(divergence.median().item())
        return sum(per_layer) / len(per_layer) if per_layer else None


def domain_shift(source: Dataset, source_samples, target: Dataset, target_samples, weights: Weights, image_size: int,
                 *, batch_size: int = 32, run: Run | None = None) -> float | None:
    """The feature shift from the source images to the target images (`BatchNormStatistics`, the
    target's statistics against the source's), on up to SHIFT_RECHECK_IMAGES of each."""
    run = run or Run()
    model = create_backbone(weights).eval().to(memory_format=torch.channels_last)
    spec = ModelSpec.for_weights(weights, source.classes, image_size=image_size)
    recorded = []
    for dataset, samples in ((source, source_samples), (target, target_samples)):
        chosen = random.Random(0).sample(list(samples), min(len(samples), SHIFT_RECHECK_IMAGES))
        with BatchNormStatistics(model) as recorder:
            feature_pass(dataset, chosen, model, spec, batch_size, run)
        recorded.append(recorder)
    return rounded(recorded[1].feature_shift(reference=recorded[0]))


def pass_measurements(recorder: BatchNormStatistics, seconds: float, image_size: int,
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
    write_bytes_atomically(_measurements_file(key, zoo), json.dumps(measured).encode())


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)
