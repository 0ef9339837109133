"""How a model is MADE: data in, one of four transfer strategies, a model saved in the zoo.

    from transfer import fit
    result = fit("path/to/images")  # strategy="auto": chosen from the data, see result.advice
    print(result.strategy, result.metrics["accuracy"], result.path)

Importing this package is cheap (no torch); `fit` loads the rest on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DataError", "Cancelled", "fit"]


class DataError(Exception):
    """The user's data cannot be used as given; the message says what to fix."""


class Cancelled(Exception):
    """The run was stopped on request (cancel button, Ctrl-C); nothing was saved."""


def __getattr__(name: str) -> Any:
    if name == "fit":
        from transfer.fit import fit

        return fit
    raise AttributeError(f"module 'transfer' has no attribute {name!r}")
