"""How a long run talks to whoever started it: progress reports out, a stop flag and a deadline in.

Every loop in `transfer` (the feature pass, head training, whole-network training, advice, a
comparison) takes a `Run`: it reports `Progress` events through the run's callback (the CLI draws
them with tqdm, the app with `gr.Progress`), checks the stop flag every batch (`transfer.Cancelled`
ends the work and nothing is saved) and stops early when the time budget is spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from transfer import Cancelled
from transfer.engine import Engine, cpu_engine


@dataclass
class Progress:
    """One report from a running fit, for a progress bar or a live plot."""

    stage: str  # "read" | "features" | "head" | "search" | "train" | "epoch" | "evaluate" | "save" | ...
    done: int  # units finished in this stage (images, or epochs)
    total: int  # units in this stage
    message: str = ""
    epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. train_loss, val_loss, val_accuracy
    eta_seconds: float | None = None  # for this stage


ProgressCallback = Callable[[Progress], None]


@dataclass
class Run:
    """What every loop needs to know about the run around it."""

    progress: ProgressCallback | None = None
    should_stop: Callable[[], bool] | None = None  # checked every batch: True -> Cancelled
    deadline: float | None = None  # time.monotonic() by which training must end (time budget)
    budget_hit: bool = False  # set when a loop stopped early because of the deadline
    engine: Engine = field(default_factory=cpu_engine)  # the device, precision and processes (transfer.engine)

    def report(self, event: Progress) -> None:
        if self.progress:
            self.progress(event)

    def check(self) -> bool:
        """Raise Cancelled on request; True when the time budget is spent (the caller stops)."""
        self.check_stop()
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.budget_hit = True
            return True
        return False

    def check_stop(self) -> None:
        """Raise Cancelled on request (the time budget is not looked at)."""
        if self.should_stop and self.should_stop():
            raise Cancelled("cancelled; nothing was saved")
