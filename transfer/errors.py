"""A fit's mistakes, image by image: the misclassified list that transfer.json keeps.

    report = error_report(samples, labels, logits, classes, split="val")
    # {"split": "val", "evaluated": 360, "count": 7,
    #  "files": [{"file": "3/0123.png", "true": "3", "predicted": "8", "score": 0.91}, ...]}

`files` holds every image of the reported split (test when there is one, else validation) whose
predicted class is not its true class, the most confidently wrong first (likely label mistakes);
`score` is the probability the model gave its (wrong) answer, and `file` the path relative to the
dataset's root. Grouped by (true, predicted) the list gives exactly the off-diagonal cells of the
confusion matrix in `metrics`. `python -m zoo show NAME --errors` prints it; the app's drill-down
(`ui.drilldown`) shows the images.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)


def error_report(samples: Sequence, labels: Sequence[int], logits: torch.Tensor, classes: Sequence[str],
                 split: str) -> dict[str, Any] | None:
    """The misclassified images of `split` (None when the samples do not line up with the labels)."""
    if len(samples) != len(labels) or any(sample.label != label for sample, label in zip(samples, labels)):
        log.warning("the %s images do not line up with their predictions; no error list is saved", split)
        return None
    probabilities = logits.float().softmax(dim=1)
    scores, predicted = probabilities.max(dim=1)
    files = [
        {"file": sample.relpath, "true": classes[label], "predicted": classes[guess], "score": round(score, 4)}
        for sample, label, guess, score in zip(samples, labels, predicted.tolist(), scores.tolist())
        if guess != label
    ]
    files.sort(key=lambda row: (-row["score"], row["file"]))
    return {"split": split, "evaluated": len(samples), "count": len(files), "files": files}


def error_cells(report: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(true, predicted) -> how many images: the confusion matrix's off-diagonal cells."""
    return dict(Counter((row["true"], row["predicted"]) for row in report["files"]))
