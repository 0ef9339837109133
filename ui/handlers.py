"""What every handler shares: the error boundary and the event options.

A handler is a plain function from widget values to widget values that calls `transfer` or `zoo`.
`friendly_errors` is its boundary: the packages' errors (bad input the user can fix) become a
`gr.Error` with their message and no traceback in the log; anything else is logged with its
traceback and shown as a short "something went wrong".
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator

import gradio as gr

from transfer import DataError
from zoo import ZooError

log = logging.getLogger("transfer_zoo.app")

INTERNAL = {"api_visibility": "private"}  # page plumbing, not part of the API
PREDICTING = {"concurrency_id": "predict", "concurrency_limit": 4}  # answers while a fit runs
TRAINING = {"concurrency_id": "training", "concurrency_limit": 1}  # fits wait their turn, one at a time


def friendly_errors(fn: Callable) -> Callable:
    """Turn the packages' errors into `gr.Error` (the message says what to fix); log anything else.

    Works for plain and generator handlers, and keeps the signature gradio inspects (gr.Progress,
    gr.OAuthProfile arguments)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            with _as_gradio_errors(fn.__name__):
                yield from fn(*args, **kwargs)

        return generator

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with _as_gradio_errors(fn.__name__):
            return fn(*args, **kwargs)

    return call


@contextlib.contextmanager
def _as_gradio_errors(action: str) -> Iterator[None]:
    try:
        yield
    except gr.Error:
        raise
    except (DataError, ZooError) as error:
        raise gr.Error(str(error), print_exception=False) from None  # a user error, not a server fault
    except Exception as error:  # the UI boundary: a short message for the user, the traceback for the log
        log.exception("%s failed", action)
        raise gr.Error(f"Something went wrong ({type(error).__name__}: {error}). "
                       "The details are in the server log.") from None


def show():
    return gr.update(visible=True)


def hide():
    return gr.update(visible=False)
