"""What a strategy's fit hands back to `transfer.fit`: final logits per split, history, details.

`transfer.frozen` and `transfer.trainable` each return an `Outcome`; `transfer.fit` turns it into
metrics, transfer.json and a `FitResult`. Image+text fits also measure their ablation here.
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


def ablation(logits_for: Callable[[bool, bool], torch.Tensor], labels: list[int]) -> dict[str, float]:
    """Validation accuracy from the image alone, the text alone, and both."""
    truth = torch.tensor(labels)

    def accuracy(image: bool, with_text: bool) -> float:
        return round((logits_for(image, with_text).argmax(1) == truth).float().mean().item(), 4)

    return {"image_only": accuracy(True, False), "text_only": accuracy(False, True),
            "image_and_text": accuracy(True, True)}
