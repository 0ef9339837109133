"""Recommend a transfer strategy from the data: how much of it there is, and how much it looks like
the backbone's pretraining data.

    from transfer.advise import advise
    advice = advise("path/to/images", budget_seconds=120)
    advice.strategy, advice.reasons          # "shallow", ["You have 320 training images ...", ...]

The classic guide (`transfer.strategies`) picks by SIZE and SIMILARITY. `transfer.measure` measures
both (one frozen pass, the one the frozen strategies then reuse from the cache), the cost model
estimates each strategy's seconds at this machine's measured speed, and `transfer.decide` turns the
numbers into a choice and plain sentences. `Advice` is what comes back, as plain data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transfer.data import Dataset, load_dataset
from transfer.engine import Engine, make_engine
from transfer.decide import (
    DEPTH_MARGIN,
    EASY_ACCURACY,
    LARGE_PER_CLASS,
    SCRATCH_PER_CLASS,
    SHIFT_SIMILAR,
    choose_strategy,
)
from transfer.measure import (
    PROBE_PER_CLASS,
    measure_similarity,
    measure_size,
    rounded,
    stratified_sample,
)
from transfer.progress import Progress, ProgressCallback, Run
from transfer.strategies import (
    STRATEGIES,
    check_image_size,
    estimate_seconds,
    image_size_for,
)
from zoo.catalog import resolve_weights
from zoo.weights import DEFAULT_BACKBONE, Weights

log = logging.getLogger(__name__)


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
    device: str = "auto",
    engine: Engine | None = None,
) -> Advice:
    """Measure `data` against `backbone` and recommend a strategy (see the module docstring).

    image_size / epochs: what the fit will be given (None: each strategy's default); the frozen pass
    runs at the frozen strategies' size, so their fit finds its features in the cache.
    budget_seconds: the time the fit may take; strategies estimated to need more are passed over.
    should_stop: polled during the pass; True raises `transfer.Cancelled`.
    device: where the pass runs (`zoo.devices`); engine: a fit's own (`transfer.engine`), instead.
    """
    started = time.monotonic()
    check_image_size(image_size)
    run = Run(progress=progress, should_stop=should_stop, engine=engine or make_engine(device))
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_fraction=val_fraction, seed=seed)
    weights = resolve_weights(backbone, zoo=zoo)
    size = measure_size(dataset)
    frozen_size = image_size_for("feature-extractor", image_size, weights.native_size)
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
        similarity={**asdict(similarity), "similar": choice.similar, "depth_gain": rounded(similarity.depth_gain),
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
        fit_size = image_size_for(name, image_size, weights.native_size)
        cached = fit_size == cached_size and (not plan.trains_backbone or plan.head_warmup)
        estimates[name] = round(estimate_seconds(
            name, num_train=len(dataset.train), num_eval=len(dataset.val) + len(dataset.test), image_size=fit_size,
            epochs=epochs, architecture=weights.architecture, features_cached=cached, speed=speed), 1)
    return estimates
