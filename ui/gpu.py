"""A GPU on a Hugging Face Space with ZeroGPU: the `spaces` package's decorator, or nothing at all.

On a ZeroGPU Space (the `spaces` package installed and `SPACES_ZERO_GPU` set, as such Spaces are), a
GPU is attached only while a function decorated with `@spaces.GPU(duration=...)` runs, for at most
`duration` seconds. The app's fine-tune, comparison and prediction handlers are decorated with
`on_gpu`, the fits with a duration from the time estimate (the CPU cost model, an upper bound on a
GPU) capped by the deployment's limit. Everywhere else `on_gpu` returns the function unchanged and
`spaces` need not be installed.

On ZeroGPU a decorated handler runs in a process of its own: Cancel cannot reach a fit there (closing
the page, or the duration, ends it).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

PREDICT_SECONDS = 30  # one prediction request, model loading included
SPARE_SECONDS = 60  # start-up, saving, and the estimate's error
MOST_SECONDS = 600  # ZeroGPU's own ceiling for one call


def zero_gpu() -> bool:
    """True on a Space with ZeroGPU hardware."""
    return bool(os.environ.get("SPACES_ZERO_GPU")) and importlib.util.find_spec("spaces") is not None


def on_gpu(duration: int | Callable[..., int]) -> Callable[[Callable], Callable]:
    """`@spaces.GPU(duration=duration)` on ZeroGPU; elsewhere the function itself. `duration` may be a
    function of the handler's arguments (as `spaces` allows)."""

    def decorate(function: Callable) -> Callable:
        if not zero_gpu():
            return function
        import spaces

        return spaces.GPU(duration=duration)(function)

    return decorate


def fit_seconds(estimate: float | None, budget: float | None) -> int:
    """The GPU time to ask for a fit estimated at `estimate` seconds within `budget` (None: none)."""
    wanted = (estimate or MOST_SECONDS) + SPARE_SECONDS
    if budget:
        wanted = min(wanted, budget + SPARE_SECONDS)
    return int(max(SPARE_SECONDS, min(wanted, MOST_SECONDS)))
