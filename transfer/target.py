"""The target domain: images from where the model will be used, given beside the labelled data.

    target = load_target("new-camera/", classes=dataset.classes)

A folder or zip of images with no labels (any layout: loose, or in folders that are not class
names), or of class folders named like the training data's (then its labels are used only to
measure accuracy on the target domain, never to train). Read with the same safety as the training
data (`transfer.uploads`: limits, junk, image headers); files that are not usable images are
skipped and listed. The samples are in `target.train`, labelled -1 when unlabelled.

`plan_adaptation` measures how far the target is from the training data and decides whether to
adapt (`transfer.adapt`); `Adaptation.report` says what it changed, for transfer.json and the card.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import torch

from transfer import DataError
from transfer.adapt import ADAPT_SHIFT
from transfer.data import Dataset, Sample, wrapping_prefix
from transfer.uploads import Limits, image_headers, junk_or_reason, list_folder, list_zip

UNLABELLED = -1


def load_target(source: str | Path, classes: list[str], *, limits: Limits | None = None) -> Dataset:
    """The target domain's images (see the module docstring), or `DataError` saying what to fix."""
    source = Path(source).expanduser()
    limits = limits or Limits()
    if not source.exists():
        raise DataError(f"target domain {source} does not exist: give a folder or .zip of images")
    if source.is_file() and source.suffix.lower() != ".zip":
        raise DataError(f"target domain {source.name} is not a folder or a .zip")
    listing, _, links = list_zip(source, limits) if source.is_file() else list_folder(source, limits)
    skipped = [(link, "symbolic link, not followed") for link in links]
    files = []
    for path in listing:
        reason = junk_or_reason(path)
        if reason == "junk":
            continue
        (skipped.append((path, reason)) if reason else files.append(path))
    prefix = wrapping_prefix(files)
    files = [path[len(prefix):] for path in files]
    folders = {PurePosixPath(path).parts[0] if len(PurePosixPath(path).parts) > 1 else None for path in files}
    labelled = bool(files) and None not in folders and folders <= set(classes)
    index = {label: number for number, label in enumerate(classes)}
    samples = [Sample(path, index[PurePosixPath(path).parts[0]] if labelled else UNLABELLED) for path in files]
    kept = []
    for sample, (problem, _) in zip(samples, image_headers(source, [prefix + s.relpath for s in samples],
                                                           limits.max_pixels)):
        (skipped.append((sample.relpath, problem)) if problem else kept.append(sample))
    if len(kept) < 2:
        raise DataError(f"target domain {source.name}: found {len(kept)} usable image(s); give at least a "
                        "few dozen images from where the model will be used")
    return Dataset(source=source, classes=list(classes), train=kept, val=[], skipped=skipped, prefix=prefix,
                   limits=limits, split_from="target")


def is_labelled(target: Dataset) -> bool:
    return all(sample.label != UNLABELLED for sample in target.train)


# --- whether and how to adapt, and what it changed -------------------------------------------------

ADAPTATION_MODES = ("auto", "on", "off")


@dataclass
class Adaptation:
    target: Dataset
    mode: str  # "auto" | "on" | "off"
    shift: float | None  # source -> target feature shift (transfer.measure.domain_shift)
    adapt: bool
    held_back: bool = False  # auto would adapt, but not this strategy (see for_strategy)

    @property
    def labelled(self) -> bool:
        return is_labelled(self.target)

    def for_strategy(self, strategy: str) -> Adaptation:
        """The decision for `strategy`. Under auto, from-scratch does not adapt: with no pretrained
        features to align, the adversary wrecked what the network was learning (benchmarks/adaptation.py:
        source accuracy 0.81 -> 0.27, target no better). --adaptation on still forces it."""
        if strategy == "from-scratch" and self.mode == "auto" and self.adapt:
            return replace(self, adapt=False, held_back=True)
        return self

    def method(self, trains_backbone: bool) -> str | None:
        if not self.adapt:
            return None
        return "dann+coral" if trains_backbone else "coral"

    def sentence(self) -> str:
        """What was measured and decided, in plain words."""
        shift = f"{self.shift:.2f}" if self.shift is not None else "not measured"
        if self.adapt:
            why = {"on": "as asked (--adaptation on)",
                   "auto": f"as that is {ADAPT_SHIFT:g} or more"}[self.mode]
            return (f"Your {len(self.target.train)} target-domain images look different from the training images "
                    f"(feature shift {shift}), so the fit adapts to them, {why}.")
        if self.held_back:
            return (f"Your {len(self.target.train)} target-domain images look different from the training images "
                    f"(feature shift {shift}), but a network trained from scratch is not adapted under "
                    "--adaptation auto: it has no pretrained features to align yet, and adversarial training "
                    "undid what it was learning (--adaptation on forces it).")
        if self.mode == "off":
            return f"The target domain's feature shift is {shift}; adaptation is off (--adaptation off)."
        return (f"Your {len(self.target.train)} target-domain images look like the training images (feature shift "
                f"{shift}, under {ADAPT_SHIFT:g}), so the fit does not adapt to them.")

    def report(self, trains_backbone: bool, logits: dict[str, torch.Tensor], labels: dict[str, list[int]]) -> dict:
        """For transfer.json and the card: the method, the shift, and (labelled target) its accuracy
        with and without adaptation."""
        report = {"target": self.target.name, "images": len(self.target.train), "labelled": self.labelled,
                  "shift": self.shift, "threshold": ADAPT_SHIFT, "mode": self.mode,
                  "method": self.method(trains_backbone), "reason": self.sentence()}
        if self.labelled and "target" in logits:
            truth = torch.tensor(labels["target"])

            def accuracy(key: str) -> float | None:
                return round((logits[key].argmax(1) == truth).float().mean().item(), 4) if key in logits else None

            report["target_accuracy"] = {"adapted" if self.adapt else "unadapted": accuracy("target")}
            if self.adapt:
                report["target_accuracy"]["unadapted"] = accuracy("target_unadapted")
        return report


def plan_adaptation(dataset: Dataset, target_path, mode: str, weights, image_size: int, run) -> Adaptation:
    """Load the target domain, measure how far it is from `dataset`, and decide (see `transfer.adapt`)."""
    from transfer.measure import domain_shift

    if mode not in ADAPTATION_MODES:
        raise DataError(f"Unknown adaptation '{mode}'; choose one of: {', '.join(ADAPTATION_MODES)}")
    if dataset.has_text:
        raise DataError("domain adaptation reads images only: give the target domain to an image-only fit "
                        "(--text-encoder none), or leave --target-domain out")
    target = load_target(target_path, dataset.classes, limits=dataset.limits)
    shift = domain_shift(dataset, dataset.train, target, target.train, weights, image_size, run=run)
    adapt = mode == "on" or (mode == "auto" and shift is not None and shift >= ADAPT_SHIFT)
    return Adaptation(target=target, mode=mode, shift=shift, adapt=adapt)
