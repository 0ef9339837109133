"""Turning results into what the page shows: durations, stage names, live curves, result text, tables.

Plain functions from `transfer`'s and `zoo`'s plain data to Markdown, pandas frames and plot data;
no widget and no side effect here, so every tab renders the same thing the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from transfer.progress import Progress

CURVE_METRICS = {"train_loss": "training", "val_loss": "validation", "val_accuracy": "accuracy"}
LOSS_COLOURS = {"training": "#2563eb", "validation": "#ea580c"}  # named in the plot's label
SPLIT_COLOURS = {"train": "#2563eb", "val": "#ea580c", "test": "#16a34a"}

STAGE_LABELS = {
    "start": "Starting", "read": "Reading images", "features": "Computing features (frozen backbone)",
    "head": "Training the new head", "search": "Choosing where to cut the backbone",
    "warm-up": "Warming up the new head", "train": "Training every layer", "epoch": "Checking on validation images",
    "evaluate": "Evaluating", "save": "Saving to the zoo", "text": "Encoding the texts",
    "fusion head": "Training the image+text head", "auto": "Auto: weighing what it tried",
}


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


def stage_label(stage: str) -> str:
    if stage.startswith("search stage"):
        return f"Trying the cut after stage {stage.removeprefix('search stage ').strip()}"
    return STAGE_LABELS.get(stage, stage.capitalize())


def stage_unit(stage: str) -> str:
    if stage in ("read", "features"):
        return "images"
    if stage == "train":
        return "batches"
    return "epochs" if stage in ("head", "warm-up", "epoch", "fusion head") or stage.startswith("search") else "steps"


def status_text(event: Progress | None, started: float, estimate: float | None) -> str:
    """One line while a fit runs: what it does, how far, the validation accuracy, time used and left."""
    elapsed = time.monotonic() - started
    if event is None:
        return f"**Starting…** ({elapsed:.0f} s)"
    parts = [f"**{stage_label(event.stage)}**"]
    if event.epoch is not None:
        parts.append(f"epoch {event.epoch}")
    elif event.total > 1:
        parts.append(f"{event.done}/{event.total}")
    if event.metrics.get("val_accuracy") is not None:
        parts.append(f"validation accuracy {event.metrics['val_accuracy']:.1%}")
    parts.append(f"{elapsed:.0f} s elapsed")
    left = event.eta_seconds if event.eta_seconds is not None else (estimate - elapsed if estimate else None)
    if left is not None and left > 1:
        parts.append(f"about {duration(left)} left")
    return " · ".join(parts)


def enlarged(image, side: int = 128):
    """A tiny PIL image (8x8 digits, a 32 px model's crop) scaled up by a whole factor to at least
    `side`, pixels kept sharp, so a gallery or heatmap shows it; larger images are returned as they are."""
    from PIL import Image

    if min(image.size) >= side:
        return image
    scale = -(-side // min(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def accuracy_text(accuracy: float | None, split: str | None) -> str:
    if accuracy is None:
        return ""
    return f"{accuracy:.1%}" + (f" ({split})" if split else "")


def classes_text(classes: list[str], width: int = 40) -> str:
    """As many class names as fit in about `width` characters, then how many there are."""
    text = ", ".join(classes)
    if len(text) <= width:
        return text
    shown = []
    for label in classes:
        if shown and len(", ".join([*shown, label])) > width:
            break
        shown.append(label)
    return ", ".join(shown) + f", … ({len(classes)})"


@dataclass
class TrainingCurve:
    """Per-epoch metrics of every phase, numbered one after another, for the live plots."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    epochs: int = 0

    def add(self, event: Progress) -> bool:
        if event.stage == "train" or event.epoch is None or not event.metrics:
            return False  # per-batch reports move the progress bar only
        self.epochs += 1
        for key, label in CURVE_METRICS.items():
            if event.metrics.get(key) is not None:
                self.rows.append({"epoch": self.epochs, "value": round(float(event.metrics[key]), 4),
                                  "metric": label, "phase": stage_label(event.stage)})
        return True

    def frame(self, *metrics: str) -> pd.DataFrame | None:
        """Rows of `metrics`; None until there are some (an empty frame fixes a plot's axes to wrong types)."""
        rows = [row for row in self.rows if row["metric"] in metrics]
        return pd.DataFrame(rows, columns=["epoch", "value", "metric", "phase"]) if rows else None

    def plots(self) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        """(validation accuracy, training and validation loss).

        The loss plot waits until both losses have a point: gradio's plots never show a series
        that first appears in a later update (the validation loss of "epoch 0" comes alone)."""
        losses = self.frame(*LOSS_COLOURS)
        complete = losses is not None and losses["metric"].nunique() == len(LOSS_COLOURS)
        return self.frame("accuracy"), losses if complete else None


# --- a finished fit -----------------------------------------------------------------------------------


def results_text(result) -> str:
    """A `transfer.fit.FitResult` in a few lines: accuracy, on what, how it was made, warnings."""
    metrics = result.metrics
    where = ("held-out test images" if result.metrics_split == "test"
             else "validation images (they also chose when to stop, so this is slightly optimistic)")
    minority = (result.balance or {}).get("minority") or []
    headline = (f"### macro-F1 {metrics['macro_f1']:.3f} · {metrics['accuracy']:.1%} accuracy" if minority
                else f"### {metrics['accuracy']:.1%} accuracy · macro-F1 {metrics['macro_f1']:.3f}")
    lines = [
        headline,
        f"On {metrics['count']} {where}.",
        f"**{result.strategy}** on `{result.backbone}` at {result.image_size} px: trained "
        f"{result.trainable_parameters:,} of {result.total_parameters:,} parameters on {result.num_train} images "
        f"in {result.train_seconds:.1f} s.",
    ]
    if result.advice:
        lines.append(f"Strategy **auto** chose **{result.strategy}**: " + " ".join(result.advice.get("reasons", [])))
    if minority:  # lopsided classes: the small ones' recall is what accuracy hides
        lines.append("**Recall of the smallest classes:** " + ", ".join(
            f"{label} {metrics['per_class'][label]['recall']:.0%}" for label in minority[:10]))
    if not result.advice:  # (auto's reasons carry these already)
        lines += list(result.notes)
    scores = (result.adaptation or {}).get("target_accuracy")
    if scores:
        lines.append("**Target-domain accuracy:** " + ", ".join(
            f"{key} {value:.1%}" for key, value in scores.items() if value is not None))
    if result.ablation:
        lines.append(ablation_text(result.ablation))
    if result.details.get("cut_stage") is not None:
        lines.append(f"The backbone was cut after stage {result.details['cut_stage']} (best on validation).")
    if result.stopped_by_budget:
        lines.append("**Warning:** the time budget ran out: training stopped early and kept its best epoch.")
    lines += [f"**Warning:** {warning}" for warning in result.warnings]
    if result.skipped:
        lines.append(f"{len(result.skipped)} file(s) were skipped (listed under the dataset summary).")
    return "\n\n".join(lines)


def ablation_text(ablation: dict[str, float]) -> str:
    """Image+text models: validation accuracy from each input alone and from both."""
    return ("**Image and text** (validation accuracy; the model answers from either alone too):\n\n"
            "| image only | text only | image and text |\n|---|---|---|\n"
            f"| {ablation['image_only']:.1%} | {ablation['text_only']:.1%} | {ablation['image_and_text']:.1%} |")


def per_class_frame(metrics: dict) -> pd.DataFrame:
    rows = [{"class": label, **values} for label, values in metrics["per_class"].items()]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def confusion_table(classes: list[str], matrix: list[list[int]]):
    """The confusion matrix as a table: rows are the true classes, columns the predictions.

    Shaded by share of the row: the diagonal (right) in green, mistakes in red."""
    frame = pd.DataFrame(matrix, columns=classes)
    frame.insert(0, "true ↓ / predicted →", classes)

    def shade(table: pd.DataFrame) -> pd.DataFrame:
        styles = pd.DataFrame("", index=table.index, columns=table.columns)
        for row, counts in enumerate(matrix):
            total = max(1, sum(counts))
            for column, count in enumerate(counts):
                if count:
                    alpha = 0.15 + 0.75 * count / total
                    colour = "22, 163, 74" if row == column else "220, 38, 38"
                    styles.iloc[row, column + 1] = f"background-color: rgba({colour}, {alpha:.2f})"
        return styles

    return frame.style.apply(shade, axis=None)


def advice_text(advice) -> str:
    """`transfer.advise.Advice` in brief: the choice, its reasons, and the numbers measured."""
    size, similarity = advice.size, advice.similarity
    measured = [f"{size['num_train']} training images, about {size['median_per_class']:.0f} per class "
                f"({size['size_class']})"]
    if similarity.get("feature_shift") is not None:
        measured.append(f"feature shift {similarity['feature_shift']:.2f} "
                        f"(similar up to {advice.thresholds.get('shift_similar', 0.2):g})")
    probe = f"quick-test accuracy {similarity['final_accuracy']:.0%} on the last layer"
    if similarity.get("stage_accuracy"):
        probe += f", {max(similarity['stage_accuracy']):.0%} on the best earlier stage"
    measured.append(probe)
    if advice.image_sizes:
        sizes = sorted(set(advice.image_sizes.values()))
        measured.append("image size " + " / ".join(f"{px} px" for px in sizes)
                        + (f" (images {advice.median_side} px, median)" if advice.median_side else ""))
    measured.append("estimated fit: " + ", ".join(f"{name} {duration(seconds)}"
                                                  for name, seconds in advice.estimated_seconds.items()))
    measured.append(f"time budget {duration(advice.budget_seconds)}" if advice.budget_seconds else "no time budget")
    return "\n\n".join([
        f"**Auto's advice: {advice.strategy}**",
        "\n".join(f"- {reason}" for reason in advice.reasons),
        f"Measured in {advice.seconds:.1f} s: " + "; ".join(measured) + ".",
    ])
