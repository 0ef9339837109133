"""The rule that picks a strategy: a pure function from the measurements to a choice and its reasons.

`choose_strategy` turns the size and similarity measured by `transfer.measure`, per-strategy time
estimates and the budget into a strategy and two or three plain sentences. It never looks at data,
so the rule is tested as a table of cases.

    small and similar            feature-extractor
    small and different          shallow
    large (similar or not)       fine-tune
    very large and different     from-scratch
    frozen features already separate the classes (EASY_ACCURACY): a frozen strategy

A strategy whose estimate exceeds the budget is passed over for the next best (and the advice says
so); when none fits, the quickest, whose training stops early.
"""

from __future__ import annotations

from dataclasses import dataclass

from transfer.strategies import STRATEGIES

# --- the rule's thresholds ------------------------------------------------------------------------------
LARGE_PER_CLASS = 100  # median training images per class from which training the whole network pays off
SCRATCH_PER_CLASS = 1000  # ... from which a random start can catch up with pretrained weights
SHIFT_SIMILAR = 0.2  # feature shift up to which the images count as like the pretraining data
DEPTH_MARGIN = 0.02  # the final features may trail the best earlier stage by this much and still suit
EASY_ACCURACY = 0.98  # frozen features already separate the classes this well: training more adds little

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
