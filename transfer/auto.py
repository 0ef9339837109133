"""`auto`: a staged search for the cheapest strategy that is as good as the best, within the time budget.

    stage 0  measure: size, similarity and the input size, from one frozen pass over every image
             (`transfer.advise.measure_data`); the pass fills the feature cache
    stage 1  the frozen strategies that fit the budget (`transfer.decide.frozen_stages`), each in
             seconds on the cached pass: feature-extractor's head, shallow's head per stage
    decide   `transfer.decide.choose_strategy` on their measured validation accuracy and the cost
             model: stop at the best of them, or go on
    stage 2  (when it goes on) fine-tune, whose head warm-up is feature-extractor's head from stage 1
             (no second warm-up), or from-scratch; then the better of it and the best frozen result
             on validation data is kept (`transfer.decide.keep_better`)

`transfer.fit` runs it for strategy="auto" and saves what it keeps; the advice (what was tried,
what each scored and took, why it stopped or went on) goes into transfer.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from transfer.advise import advice_from, estimate_fits, measure_data
from transfer.data import Dataset
from transfer.decide import StageResult, choose_strategy, frozen_stages, keep_better
from transfer.outcome import Fitted
from transfer.progress import Progress, Run
from zoo.catalog import resolve_weights

log = logging.getLogger(__name__)

Train = Callable[..., Fitted]  # train(strategy_name, warm_head=None, epochs=...) -> its fit, not yet saved


def staged_search(dataset: Dataset, train: Train, *, backbone: str, zoo: str | Path | None, image_size: int | None,
                  epochs: int | None, batch_size: int, budget_left: Callable[[], float | None], run: Run,
                  seed: int = 0) -> tuple[Fitted, dict[str, Any]]:
    """(the fit to keep, the advice as plain data); see the module docstring.

    train: runs one strategy on `dataset` with the fit's settings (`transfer.fit`'s own).
    budget_left: seconds left of the fit's time budget (None: no budget)."""
    began = time.monotonic()
    # stage 0: measure (the pass covers every image: stage 1 reads it from the cache)
    measured = measure_data(dataset, resolve_weights(backbone, zoo=zoo), image_size=image_size,
                            batch_size=batch_size, zoo=zoo, run=run, everything=True, seed=seed)

    def estimates(head_ready: bool = False) -> dict[str, float]:
        return estimate_fits(dataset, measured.weights, image_size=image_size, epochs=epochs,
                             cached_size=measured.frozen_size, speed=measured.speed, head_ready=head_ready)

    # stage 1: the frozen strategies, in seconds each on the cached pass
    fits: dict[str, Fitted] = {}
    tried: list[StageResult] = []
    stages = frozen_stages(estimates(), budget_left())
    for done, name in enumerate(stages):
        fits[name] = train(name, epochs=None)  # heads stop early on their own; --epochs is for the network
        tried.append(_stage_result(fits[name]))
        run.report(Progress("auto", done + 1, len(stages), message=f"auto tried {_scored(tried[-1])}"))

    # decide
    warm_head = _warm_head(fits.get("feature-extractor"))
    left = budget_left()
    now = estimates(head_ready=warm_head is not None)
    # several processes (accelerate launch, torchrun): all follow the main one's choice
    choice = run.engine.share(choose_strategy(measured.size, measured.similarity, now, left, tried=tuple(tried)))
    advice = advice_from(measured, choice, now, budget_seconds=None if left is None else round(left, 1),
                         backbone=backbone, image_size=image_size, median_side=dataset.median_side, started=began)
    kept = fits[choice.best_frozen]
    if choice.verdict == "go on":
        run.report(Progress("auto", len(stages), len(stages), message=f"auto goes on to {choice.strategy}: "
                            f"{advice.reasons[-1]}"))
        # stage 2: the trainable strategy, then the better of it and the best frozen result
        warm = warm_head if choice.strategy == "fine-tune" else None  # from-scratch has no warm-up
        trained = train(choice.strategy, warm_head=warm)
        if warm is not None:
            trained.outcome.details["warm_up"] = "feature-extractor's head, from auto's frozen stage"
        result = _stage_result(trained, "warm-up: feature-extractor's head" if warm is not None else "")
        strategy, sentence = run.engine.share(keep_better(choice, result))
        kept = trained if strategy == choice.strategy else kept
        advice.tried.append(asdict(result))
        advice.reasons.append(sentence)
        advice.strategy = strategy
    advice.seconds = round(time.monotonic() - began, 2)
    log.debug("auto: %s. %s", advice.strategy, advice.explanation)
    run.report(Progress("advice", 1, 1, message=f"auto chose {advice.strategy}: {advice.explanation}"))
    return kept, advice.to_json()


def _stage_result(fitted: Fitted, detail: str = "") -> StageResult:
    cut = fitted.outcome.details.get("cut_stage")
    if cut is not None:
        detail = f"cut after stage {cut}"
    return StageResult(fitted.plan.name, fitted.val_accuracy, round(fitted.seconds, 1), True, detail)


def _scored(result: StageResult) -> str:
    return f"{result.strategy}: {result.accuracy:.1%} on validation images in {result.seconds:.1f} s"


def _warm_head(fitted: Fitted | None) -> torch.nn.Linear | None:
    """feature-extractor's trained head, for fine-tune's warm-up (image-only models: a plain classifier)."""
    if fitted is None or fitted.spec.text is not None:
        return None
    head = fitted.model.get_classifier()
    return head if isinstance(head, torch.nn.Linear) else None
