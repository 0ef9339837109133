"""Transfer Zoo in the browser: a Gradio Blocks app built from one module per tab.

    config.py       settings from the environment, who may do what (Space owner sign-in)
    handlers.py     the error boundary every handler shares, event options (queues, API visibility)
    runs.py         a fit or a comparison in the background: progress queue, cancel, queueing
    uploads.py      the uploaded zip, opened and checked once; its summary, counts and thumbnails
    settings.py     the Fine-tune and Compare widgets' values, checked
    views.py        durations, stage names, live curves, result text and tables
    zoo_tab.py  predict_tab.py  train_tab.py  compare_tab.py   one tab each: handlers, layout, wiring
    layout.py       the page: header, the four tabs, the queue, launch options

Handlers are plain functions that turn widget values into one call to `transfer` or `zoo` and the
answer back into widget values; no ML happens here. Every event has an `api_name`, so everything
the page does, `gradio_client` can do too. The arrows point one way: app.py -> ui -> transfer -> zoo.
"""

from ui.layout import build_demo, launch_options

__all__ = ["build_demo", "launch_options"]
