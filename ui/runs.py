"""A fit or a comparison in the background: its thread, its progress queue, cancel and queueing.

The Train (or Compare) click first runs a lock handler outside the queue, which greys the button
out, lights Cancel up and makes a `TrainingRun` at once; the page keeps it in a `gr.State` (per
user, never a module global). The work handler, which may wait in the queue behind other users'
fits, claims that run (`claim`), starts the work in the run's thread and `follow`s it: the work's
progress callback feeds a queue that the handler drains, moving the `gr.Progress` bar and yielding
live updates. Cancel sets the run's stop flag (`cancel`), which the work polls every batch: it
raises `transfer.Cancelled` within a batch or two. A cancel that comes while the run still waits in
the queue is honoured before any work starts. Closing the page stops the run too (`stop_run`, the
state's delete callback), as does a handler that goes away mid-run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from transfer import Cancelled
from transfer.progress import Progress


@dataclass
class TrainingRun:
    """One user's fit (or comparison) in a worker thread, shared by its handlers through gr.State."""

    stop: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue = field(default_factory=queue.Queue)  # Progress reports from the work
    result: Any = None  # what the work returned, once it succeeded
    error: Exception | None = None  # what ended it otherwise (transfer.Cancelled on cancel)
    thread: threading.Thread | None = None

    def __deepcopy__(self, memo: dict) -> "TrainingRun":
        return self  # a handle on a live run: gr.State must share it, not copy it

    def start(self, work: Callable, **arguments: Any) -> None:
        """Run `work(**arguments, progress=..., should_stop=...)` in the run's thread (`transfer.fit.fit`
        and `transfer.compare.compare` both take those two)."""
        self.thread = threading.Thread(target=self._work, args=(work,), kwargs=arguments,
                                       name=work.__name__, daemon=True)
        self.thread.start()

    def _work(self, work: Callable, **arguments: Any) -> None:
        try:
            self.result = work(**arguments, progress=self.events.put, should_stop=self.stop.is_set)
        except Exception as error:  # handed to the UI thread, which reports it
            self.error = error

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def cancelled(self) -> bool:
        return isinstance(self.error, Cancelled)

    def reports(self, wait: float) -> list[Progress]:
        """Every progress report so far, waiting up to `wait` seconds for the first."""
        try:
            found = [self.events.get(timeout=wait)]
        except queue.Empty:
            return []
        while not self.events.empty():
            found.append(self.events.get_nowait())
        return found


def claim(run: TrainingRun | None) -> TrainingRun | None:
    """The run the work handler uses: the page's (made at the click), or a new one for API calls.
    None when it was cancelled while it waited in the queue (nothing should start)."""
    if not isinstance(run, TrainingRun) or run.thread is not None:
        return TrainingRun()
    return None if run.stop.is_set() else run


def follow(run: TrainingRun, wait: float = 0.25) -> Iterator[list[Progress]]:
    """The run's progress reports, a batch at a time (an empty batch after `wait` seconds of quiet),
    until its work has ended. If the consumer goes away mid-run (the page closed), the run stops."""
    try:
        while run.running or not run.events.empty():
            yield run.reports(wait=wait)
        run.thread.join()
    finally:
        if run.running:
            run.stop.set()


def outcome(run: TrainingRun) -> Any:
    """What the work returned; None when it was cancelled; its error raised otherwise."""
    if run.cancelled:
        return None
    if run.error is not None:
        raise run.error
    return run.result


def cancel(run: TrainingRun | None, idle: str, stopping: str) -> str:
    """Stop `run` (queued or running); the message says which, or `idle` when there is nothing to stop."""
    if not isinstance(run, TrainingRun) or run.stop.is_set() or (run.thread is not None and not run.running):
        return idle
    run.stop.set()
    if run.thread is None:
        return "**Cancelled** before it started. Nothing was saved."
    return stopping


def stop_run(run: TrainingRun | None) -> None:
    """gr.State's delete callback: a closed page stops its run (nothing more is saved)."""
    if isinstance(run, TrainingRun):
        run.stop.set()
