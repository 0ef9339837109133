"""What a strategy's fit hands back to `transfer.fit`: final logits per split, history, details.

`transfer.frozen` and `transfer.trainable` each return an `Outcome`; `transfer.fit` wraps it with the
model in a `Fitted` (what auto's staged search weighs) and turns it into metrics, transfer.json and
a `FitResult`. Image+text fits also measure their ablation here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Outcome:
    logits: dict[str, torch.Tensor]  # per split: (N, classes) from the final model
    labels: dict[str, list[int]]
    history: list[dict[str, Any]]
    epochs: int | None
    data_fingerprint: str
    details: dict[str, Any] = field(default_factory=dict)
    parameters: tuple[int, int] | None = None  # (trainable, total) when the model itself does not say
    ablation: dict[str, float] | None = None


@dataclass
class Fitted:
    """One strategy's finished fit, not yet saved."""

    plan: Any  # transfer.strategies.Strategy
    weights: Any  # zoo.weights.Weights
    model: torch.nn.Module
    spec: Any  # zoo.model.ModelSpec
    outcome: Outcome
    seconds: float = 0.0

    @property
    def val_accuracy(self) -> float:
        logits, labels = self.outcome.logits["val"], torch.tensor(self.outcome.labels["val"])
        return round((logits.argmax(1) == labels).float().mean().item(), 4) if len(labels) else 0.0


def ablation(logits_for: Callable[[bool, bool], torch.Tensor], labels: list[int]) -> dict[str, float]:
    """Validation accuracy from the image alone, the text alone, and both."""
    truth = torch.tensor(labels)

    def accuracy(image: bool, with_text: bool) -> float:
        return round((logits_for(image, with_text).argmax(1) == truth).float().mean().item(), 4)

    return {"image_only": accuracy(True, False), "text_only": accuracy(False, True),
            "image_and_text": accuracy(True, True)}
