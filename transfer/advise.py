"""Recommend a transfer strategy from the data: how much of it there is, and how much it looks like
the backbone's pretraining data.

    from transfer.advise import advise
    advice = advise("path/to/images", budget_seconds=120)
    advice.strategy, advice.reasons          # "shallow", ["You have 320 training images ...", ...]

The classic guide (`transfer.strategies`) picks by SIZE and SIMILARITY. `measure_data` measures
both (one frozen pass, the one the frozen strategies then reuse from the cache) and picks the input
size from the images, the cost model estimates each strategy's seconds at this machine's measured
speed (`estimate_fits`), and `transfer.decide` turns the numbers into a choice and plain sentences
(`advice_from`). `advise` trains nothing: the quick probes of the frozen pass stand in for the
frozen strategies' scores; `fit(strategy="auto")` measures them for real (`transfer.auto`) and
decides again. `Advice` is what comes back, as plain data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from transfer.balance import choose_balance, train_counts
from transfer.data import Dataset, load_dataset
from transfer.engine import Engine, make_engine
from transfer.decide import (
    DEPTH_MARGIN,
    EASY_ACCURACY,
    GAIN_PER_MINUTE,
    LARGE_PER_CLASS,
    MIN_GAIN,
    SCRATCH_PER_CLASS,
    SHIFT_SIMILAR,
    Choice,
    SimilarityMeasure,
    SizeMeasure,
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
    describe_image_size,
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
    image_size: int | None  # the size asked for (None: chosen from the images, see image_sizes)
    seconds: float  # how long advising took
    thresholds: dict[str, float] = field(default_factory=dict)
    image_sizes: dict[str, int] = field(default_factory=dict)  # per strategy, the input size its fit uses
    median_side: int | None = None  # px, the images' median shorter side (what the sizes are chosen from)
    # the staged search: the frozen results weighed (transfer.decide.StageResult fields: strategy,
    # accuracy, seconds, measured, detail), then, in a fit, the trainable stage it went on to (if any)
    tried: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = ""  # why the search stopped or went on (transfer.decide.Choice.verdict)
    best_frozen: str = ""

    @property
    def explanation(self) -> str:
        return " ".join(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def measurements(self) -> tuple[SizeMeasure, SimilarityMeasure]:
        """The measurements behind this advice, to weigh again (e.g. with measured frozen results)."""
        size = SizeMeasure(**{f.name: self.size[f.name] for f in fields(SizeMeasure)})
        measured = {f.name: self.similarity[f.name] for f in fields(SimilarityMeasure)}
        return size, SimilarityMeasure(**{**measured, "stage_accuracy": tuple(measured["stage_accuracy"])})


@dataclass
class Measured:
    """What advising measures, kept so that the staged search can decide again (`transfer.auto`)."""

    size: SizeMeasure
    similarity: SimilarityMeasure
    speed: float  # see Advice.speed
    weights: Weights
    image_sizes: dict[str, int]  # per strategy
    frozen_size: int  # the frozen pass's input size
    everything: bool  # the pass covered every image (else a sample): the frozen fits find their features cached


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

    image_size / epochs: what the fit will be given (None: chosen from the images / each strategy's
    default); the frozen pass runs at the frozen strategies' size, so their fit finds its features
    in the cache. budget_seconds: the time the fit may take; strategies estimated to need more are
    passed over. should_stop: polled during the pass; True raises `transfer.Cancelled`.
    device: where the pass runs (`zoo.devices`); engine: a fit's own (`transfer.engine`), instead.
    """
    started = time.monotonic()
    check_image_size(image_size)
    run = Run(progress=progress, should_stop=should_stop, engine=engine or make_engine(device))
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_fraction=val_fraction, seed=seed)
    measured = measure_data(dataset, resolve_weights(backbone, zoo=zoo), image_size=image_size,
                            batch_size=batch_size, zoo=zoo, run=run, seed=seed)
    estimates = estimate_fits(dataset, measured.weights, image_size=image_size, epochs=epochs,
                              cached_size=measured.frozen_size if measured.everything else None, speed=measured.speed)
    choice = choose_strategy(measured.size, measured.similarity, estimates, budget_seconds)
    advice = advice_from(measured, choice, estimates, budget_seconds=budget_seconds, backbone=backbone,
                         image_size=image_size, median_side=dataset.median_side, started=started)
    imbalance = choose_balance(train_counts(dataset)).sentence()  # (a fit adds it to auto's reasons itself)
    if imbalance:
        advice.reasons.append(imbalance)
    log.debug("auto: %s. %s", advice.strategy, advice.explanation)
    run.report(Progress("advice", 1, 1, message=f"auto chose {advice.strategy}: {advice.explanation}"))
    return advice


def measure_data(dataset: Dataset, weights: Weights, *, image_size: int | None, batch_size: int, zoo, run: Run,
                 everything: bool = False, seed: int = 0) -> Measured:
    """Size, similarity (one frozen pass) and input sizes of `dataset`.

    everything: pass every image even when the data is large (the fit's frozen stage needs them
    all); otherwise large data is probed on a stratified sample."""
    size = measure_size(dataset)
    sizes = {name: image_size_for(name, image_size, weights.native_size, dataset.median_side) for name in STRATEGIES}
    frozen_size = sizes["feature-extractor"]
    everything = everything or size.size_class == "small"  # a small frozen fit wants every image's features
    probed = dataset if everything else stratified_sample(dataset, PROBE_PER_CLASS, seed)
    similarity, speed = measure_similarity(probed, weights, frozen_size, batch_size=batch_size, zoo=zoo, run=run)
    return Measured(size, similarity, speed or 1.0, weights, sizes, frozen_size, everything)


def advice_from(measured: Measured, choice: Choice, estimates: dict[str, float], *, budget_seconds: float | None,
                backbone: str, image_size: int | None, median_side: int | None, started: float) -> Advice:
    """The `Advice` for a choice: its reasons, with the input size and why after the size sentence."""
    reasons = list(choice.reasons)
    reasons.insert(1, describe_image_size(measured.image_sizes, image_size, median_side))
    similarity = measured.similarity
    return Advice(
        strategy=choice.strategy,
        reasons=reasons,
        size={**asdict(measured.size), "size_class": measured.size.size_class},
        similarity={**asdict(similarity), "similar": choice.similar, "depth_gain": rounded(similarity.depth_gain),
                    "best_stage": similarity.best_stage},
        estimated_seconds=estimates,
        speed=measured.speed,
        budget_seconds=budget_seconds,
        preference=list(choice.preference),
        over_budget=list(choice.over_budget),
        backbone=backbone,
        image_size=image_size,
        seconds=round(time.monotonic() - started, 2),
        thresholds={"large_per_class": LARGE_PER_CLASS, "scratch_per_class": SCRATCH_PER_CLASS,
                    "shift_similar": SHIFT_SIMILAR, "depth_margin": DEPTH_MARGIN, "easy_accuracy": EASY_ACCURACY,
                    "min_gain": MIN_GAIN, "gain_per_minute": GAIN_PER_MINUTE},
        image_sizes=dict(measured.image_sizes),
        median_side=median_side,
        tried=[asdict(result) for result in choice.tried],
        verdict=choice.verdict,
        best_frozen=choice.best_frozen,
    )


def estimate_fits(dataset: Dataset, weights: Weights, *, image_size: int | None = None, epochs: int | None = None,
                  cached_size: int | None = None, speed: float = 1.0, head_ready: bool = False) -> dict[str, float]:
    """Estimated seconds of a fit of `dataset` under each strategy (`estimate_seconds`).

    cached_size: the input size at which the frozen features of every image are already cached.
    speed: the measured slowness of this machine (see `Advice.speed`).
    head_ready: fine-tune's warm-up head is already trained (auto's frozen stage): no pass for it."""
    estimates = {}
    for name, plan in STRATEGIES.items():
        fit_size = image_size_for(name, image_size, weights.native_size, dataset.median_side)
        cached = (fit_size == cached_size and (not plan.trains_backbone or plan.head_warmup)
                  or head_ready and plan.head_warmup)
        estimates[name] = round(estimate_seconds(
            name, num_train=len(dataset.train), num_eval=len(dataset.val) + len(dataset.test), image_size=fit_size,
            epochs=epochs, architecture=weights.architecture, features_cached=cached, speed=speed), 1)
    return estimates
