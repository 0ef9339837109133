"""Lopsided classes (20 images of one, 2,000 of another): weigh them, resample them, or leave them.

    auto      from the imbalance ratio, largest / smallest class in the training split: under
              `WEIGHTS_FROM` nothing, from it on class weights. (Resampling lost to weights where we
              measured it: 20:1 digits, frozen head, macro-F1 0.64 against 0.76, minority recall
              0.37 against 0.63; benchmarks/adaptation.py. The few minority images, drawn again and
              again, are learned by heart.)
    weights   inverse-frequency class weights in the loss (mean 1): every class counts equally
    resample  each epoch draws the training images with replacement, every class equally often
              (the minority's images are seen many times, each time differently augmented)
    none      the data as it is

With imbalanced data, accuracy mostly measures the large classes: the results lead with macro-F1
and the recall of each minority class (those with a fifth or less of the largest class's images),
and warn about them by name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from transfer import DataError

BALANCE_CHOICES = ("auto", "weights", "resample", "none")
WEIGHTS_FROM = 1.5  # largest / smallest class from which auto weighs the classes
MINORITY_SHARE = 0.2  # a class with at most this share of the largest class's images is a minority


@dataclass(frozen=True)
class Balance:
    method: str  # "weights" | "resample" | "none"
    requested: str  # what the user asked for ("auto" or a method)
    ratio: float  # largest / smallest class in the training split
    counts: dict[str, int]  # training images per class
    minority: tuple[str, ...]  # classes with at most MINORITY_SHARE of the largest's images

    @property
    def imbalanced(self) -> bool:
        return self.ratio >= WEIGHTS_FROM

    def class_weights(self, labels: list[int], num_classes: int) -> list[float] | None:
        """Inverse-frequency weights (mean 1) for the loss, when the method is "weights"."""
        return _inverse_frequency(labels, num_classes) if self.method == "weights" else None

    def sample_weights(self, labels: list[int], num_classes: int) -> torch.Tensor | None:
        """Per-image drawing weights (every class equally likely), when the method is "resample"."""
        if self.method != "resample":
            return None
        per_class = _inverse_frequency(labels, num_classes)
        return torch.tensor([per_class[label] for label in labels], dtype=torch.double)

    def sentence(self) -> str:
        """The imbalance and what the fit does about it, in plain words ("" when balanced)."""
        if not self.imbalanced:
            return ""
        largest, smallest = max(self.counts.values()), min(self.counts.values())
        action = {"weights": "weighs each class's errors by its rarity",
                  "resample": "draws every class equally often in each epoch",
                  "none": "leaves them as they are (--balance none)"}[self.method]
        rare = ", ".join(self.minority[:6]) + (f" and {len(self.minority) - 6} more" if len(self.minority) > 6 else "")
        return (f"Your classes are imbalanced ({largest} vs {smallest} training images, {self.ratio:.0f}:1; "
                f"fewest: {rare}), so the fit {action}; judge it by macro-F1 and those classes' recall.")

    def to_json(self) -> dict:
        return {"method": self.method, "requested": self.requested, "ratio": round(self.ratio, 2),
                "minority": list(self.minority)}


def choose_balance(counts: dict[str, int], requested: str = "auto") -> Balance:
    """The balancing of a training split with `counts` images per class (see the module docstring)."""
    if requested not in BALANCE_CHOICES:
        raise DataError(f"Unknown balance '{requested}'; choose one of: {', '.join(BALANCE_CHOICES)}")
    present = {label: count for label, count in counts.items() if count}
    largest, smallest = max(present.values()), min(present.values())
    ratio = largest / smallest
    method = requested
    if requested == "auto":
        method = "none" if ratio < WEIGHTS_FROM else "weights"
    minority = tuple(label for label, count in sorted(present.items(), key=lambda item: item[1])
                     if count <= MINORITY_SHARE * largest) if ratio >= WEIGHTS_FROM else ()
    return Balance(method=method, requested=requested, ratio=ratio, counts=dict(counts), minority=minority)


def train_counts(dataset) -> dict[str, int]:
    """Training images per class of a `transfer.data.Dataset`."""
    return {label: counts.get("train", 0) for label, counts in dataset.class_counts().items()}


def _inverse_frequency(labels: list[int], num_classes: int) -> list[float]:
    tally = Counter(labels)
    return [len(labels) / (num_classes * tally[index]) if tally[index] else 0.0 for index in range(num_classes)]
