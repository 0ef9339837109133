"""The rule that picks a strategy: a pure function from the measurements to a choice and its reasons.

`auto` is a staged search. The classic guide ranks the strategies by SIZE and SIMILARITY (the
prior, `preference_order`). The frozen strategies cost seconds once the backbone's pass is cached,
so they are tried first (`frozen_stages`: those that fit the time budget) and their validation
accuracy measured; `choose_strategy` then decides whether a trainable strategy is likely to beat
the best of them by a margin worth its estimated seconds:

    a frozen result at 98% or more (EASY_ACCURACY)   stop: keep the best frozen strategy
    small data (under 100 images per class)          stop: too few to retrain a network safely
    no trainable strategy fits the budget            stop, and say so
    the hoped-for gain is not worth the time         stop: a share of the frozen errors (larger when
                                                     the deep layers do not suit the data or the
                                                     images are unlike the pretraining photos) must
                                                     reach MIN_GAIN + GAIN_PER_MINUTE per minute
    otherwise                                        go on: fine-tune (from-scratch when the data is
                                                     very large and different)

Without measured results (`transfer.advise` trains nothing) the quick probes of the frozen pass
stand in for them. The best frozen result is the highest accuracy (ties: the one the prior ranks
first). A strategy whose estimate exceeds the budget is never tried (the advice says so); when none
fits, the quickest, whose training stops early. The rule never looks at data, so it is tested as a
table of recorded measurements.
"""

from __future__ import annotations

from dataclasses import dataclass


# --- the rule's thresholds ------------------------------------------------------------------------------
LARGE_PER_CLASS = 100  # median training images per class from which training the whole network pays off
SCRATCH_PER_CLASS = 1000  # ... from which a random start can catch up with pretrained weights
SHIFT_SIMILAR = 0.2  # feature shift up to which the images count as like the pretraining data
DEPTH_MARGIN = 0.02  # the final features may trail the best earlier stage by this much and still suit
EASY_ACCURACY = 0.98  # a frozen result this good stops the search: training more adds little
MIN_GAIN = 0.01  # a trainable strategy must hope to add at least this much accuracy to the best frozen one...
GAIN_PER_MINUTE = 0.005  # ... plus this much per minute of its estimated time
SHARE_SUITED = 0.5  # the share of the frozen errors retraining may hope to remove when the deep layers suit
SHARE_UNSUITED = 0.75  # ... when they do not, or the images are unlike the pretraining photos
FROZEN = ("feature-extractor", "shallow")  # the strategies tried first, in this order, on one cached pass

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
class StageResult:
    """What one frozen strategy scored: measured by training its head, or predicted by the quick probe."""

    strategy: str
    accuracy: float  # validation accuracy
    seconds: float = 0.0  # how long its fit took (0: predicted, nothing trained)
    measured: bool = True  # False: the quick cross-validated probe's figure (`transfer.advise`)
    detail: str = ""  # e.g. "cut after stage 3"


@dataclass(frozen=True)
class Choice:
    strategy: str
    preference: tuple[str, ...]  # every strategy, best first for this data's size and similarity (the prior)
    similar: bool
    over_budget: tuple[str, ...]  # strategies passed over because their estimate exceeds the budget
    reasons: tuple[str, ...]  # four sentences for a non-expert: size, similarity, what was tried, the choice
    tried: tuple[StageResult, ...] = ()  # the frozen results the choice weighed
    verdict: str = ""  # "separated" | "small" | "over budget" | "not worth it" | "go on"
    best_frozen: str = ""  # the best frozen strategy: what the search keeps when it stops


# --- the rule: a pure function of the numbers ----------------------------------------------------------


def is_similar(similarity: SimilarityMeasure) -> bool:
    """Like the pretraining data: small feature shift AND the deepest features suit it (as far as measured)."""
    shift_close = similarity.feature_shift is None or similarity.feature_shift <= SHIFT_SIMILAR
    depth_suits = similarity.depth_gain is None or similarity.depth_gain >= -DEPTH_MARGIN
    return shift_close and depth_suits


def preference_order(size_class: str, similar: bool, easy: bool = False) -> tuple[str, ...]:
    """Every strategy, best first, for data of this size and similarity (the classic guide)."""
    frozen = FROZEN if similar else FROZEN[::-1]
    if size_class == "small" or easy:
        return (*frozen, "fine-tune", "from-scratch")
    if similar or size_class == "large":
        return ("fine-tune", *frozen, "from-scratch")
    return ("from-scratch", "fine-tune", *frozen)  # very large and different


def frozen_stages(estimated_seconds: dict[str, float], budget_seconds: float | None = None) -> tuple[str, ...]:
    """The frozen strategies to try first: each whose estimate fits the budget; none fits: the quickest."""
    fits = tuple(name for name in FROZEN if budget_seconds is None or estimated_seconds[name] <= budget_seconds)
    return fits or (min(FROZEN, key=lambda name: estimated_seconds[name]),)


def probe_results(similarity: SimilarityMeasure, stages: tuple[str, ...] = FROZEN) -> tuple[StageResult, ...]:
    """What the quick probes predict the frozen strategies will score (no head trained): feature-extractor
    the final features' figure, shallow the best stage's."""
    predicted = {"feature-extractor": similarity.final_accuracy}
    if similarity.stage_accuracy:
        predicted["shallow"] = max(similarity.stage_accuracy)
    return tuple(StageResult(name, predicted[name], measured=False) for name in stages if name in predicted)


def choose_strategy(
    size: SizeMeasure,
    similarity: SimilarityMeasure,
    estimated_seconds: dict[str, float],
    budget_seconds: float | None = None,
    tried: tuple[StageResult, ...] | None = None,
) -> Choice:
    """The strategy for these numbers, and why (see the module docstring).

    tried: the frozen strategies' measured validation accuracies (None: the probes' predictions, for
    the frozen strategies that fit the budget). budget_seconds: what is left of the time budget."""
    similar = is_similar(similarity)
    preference = preference_order(size.size_class, similar)
    if tried is None:
        tried = probe_results(similarity, frozen_stages(estimated_seconds, budget_seconds))
    ranked = sorted(tried, key=lambda result: (-result.accuracy, preference.index(result.strategy)))
    best = ranked[0]
    # a measured result ran whatever its estimate; a budget shorter than every prediction is said
    fits = budget_seconds is None or any(r.measured or estimated_seconds[r.strategy] <= budget_seconds for r in tried)
    trainable = ("from-scratch", "fine-tune") if size.size_class == "very large" and not similar else ("fine-tune",)
    affordable = [name for name in trainable if budget_seconds is None or estimated_seconds[name] <= budget_seconds]
    hoped = needed = 0.0
    if best.accuracy >= EASY_ACCURACY:
        verdict = "separated"
    elif size.size_class == "small":
        verdict = "small"
    elif not affordable:
        verdict = "over budget"
    else:
        candidate = affordable[0]
        hoped = (SHARE_SUITED if similar else SHARE_UNSUITED) * (1 - best.accuracy)
        needed = MIN_GAIN + GAIN_PER_MINUTE * estimated_seconds[candidate] / 60
        verdict = "go on" if hoped >= needed else "not worth it"
    strategy = candidate if verdict == "go on" else best.strategy
    # passed over for the budget: trainable strategies the search would have gone on to, and frozen
    # ones not tried that the prior ranks above the choice
    passed = list(trainable) if verdict == "over budget" else []
    if verdict in ("go on", "not worth it"):
        passed = list(trainable[:trainable.index(candidate)])
    passed += [name for name in FROZEN if name not in {result.strategy for result in tried}
               and preference.index(name) < preference.index(strategy)]
    over_budget = tuple(sorted(passed, key=preference.index))
    reasons = (
        _size_sentence(size),
        _similarity_sentence(similarity, similar),
        _tried_sentence(ranked),
        _choice_sentence(strategy, verdict, best, trainable, over_budget, estimated_seconds, budget_seconds, fits,
                         similar, hoped, needed),
    )
    return Choice(strategy, preference, similar, over_budget, reasons, tuple(tried), verdict, best.strategy)


def keep_better(choice: Choice, trained: StageResult) -> tuple[str, str]:
    """After the search went on to `trained`: the strategy to keep, which is the trained one only when it
    beats the best frozen result on validation data (a tie keeps the frozen one, the cheaper), and a
    sentence saying so."""
    best = next(result for result in choice.tried if result.strategy == choice.best_frozen)
    scored = f"{trained.strategy} reached {trained.accuracy:.1%} on validation images ({_duration(trained.seconds)})"
    if trained.accuracy > best.accuracy:
        return trained.strategy, (f"Then {scored}, better than {best.strategy}'s {best.accuracy:.1%}: "
                                  f"the {trained.strategy} model is kept.")
    return best.strategy, (f"Then {scored}, no better than {best.strategy}'s {best.accuracy:.1%}: "
                           f"the {best.strategy} model is kept instead.")


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


def _tried_sentence(ranked: list[StageResult]) -> str:
    def one(result: StageResult) -> str:
        detail = [result.detail] if result.detail else []
        if result.measured:
            detail.append(_duration(result.seconds))
        return f"{result.strategy} {result.accuracy:.1%}" + (f" ({', '.join(detail)})" if detail else "")

    in_order = sorted(ranked, key=lambda result: FROZEN.index(result.strategy))
    scores = ", ".join(one(result) for result in in_order)
    if all(result.measured for result in ranked):
        return f"Tried first, on one cached pass of the pretrained network: {scores} on validation images."
    return (f"A quick test of the frozen network's features predicts {scores}; the fit tries "
            f"{'these' if len(ranked) > 1 else 'this'} first, in seconds, and measures.")


def _choice_sentence(strategy: str, verdict: str, best: StageResult, trainable: tuple[str, ...],
                     over_budget: list[str], estimated_seconds: dict[str, float], budget_seconds: float | None,
                     fits: bool, similar: bool, hoped: float, needed: float) -> str:
    sentence = f"So: {strategy}, which will {PLAIN_WORDS[strategy]}"
    if not (best.measured and strategy == best.strategy):  # a measured result is done: no estimate
        sentence += f" (about {_duration(estimated_seconds[strategy])})"
    retrain = f"{trainable[-1]} (about {_duration(estimated_seconds[trainable[-1]])})"
    if verdict == "separated":
        sentence += (f": at {best.accuracy:.1%} the pretrained features already separate your classes almost "
                     f"perfectly, so retraining the whole network would cost time without gaining much.")
    elif verdict == "small":
        sentence += (": with this few images per class, retraining the whole network would learn them by heart; "
                     "the best frozen result is the safer model.")
    elif verdict == "not worth it":
        sentence += (f": {retrain} might add about {_points(hoped)} to {best.strategy}'s {best.accuracy:.1%}, "
                     f"fewer than the {_points(needed)} its time is worth (auto asks {_points(MIN_GAIN)} plus "
                     f"{_points(GAIN_PER_MINUTE)} per minute).")
    elif verdict == "go on":
        why = ("the pretrained layers suit your images, yet retraining them" if similar else
               "your images are unlike what the pretrained layers learned from, so retraining them")
        sentence += (f": the best frozen result is {best.strategy} at {best.accuracy:.1%}; {why} may add about "
                     f"{_points(hoped)}, worth its time (auto asks {_points(needed)} here). The fit keeps "
                     "whichever of the two scores better on validation images.")
    else:
        sentence += "."
    if not fits:
        sentence += (f" No strategy fits your {_duration(budget_seconds)} budget; this is the quickest, and its "
                     "training stops early to keep to the budget. Allow more time for a better model.")
    elif over_budget:
        skipped = ", ".join(f"{name} (about {_duration(estimated_seconds[name])})" for name in over_budget)
        verb = "exceeds" if len(over_budget) == 1 else "each exceed"
        sentence += (f" Worth trying would be {skipped}, but that {verb} your "
                     f"{_duration(budget_seconds)} budget, so this is the best that fits.")
    return sentence


def _points(share: float) -> str:
    """An accuracy difference in percentage points: 0.012 -> "1.2 points"."""
    return f"{share * 100:.1f} point{'' if round(share * 100, 1) == 1 else 's'}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unlimited"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
