"""Helpers for the app's tests: generated colour datasets, the app served in this process, and
reading gradio_client's answers. (The fixtures built from them are in conftest.py.)

The data is tiny and generated: three colours, which the real bundled ImageNet backbone tells apart
at 64 px, so a fit through the app takes seconds.
"""

from __future__ import annotations

import contextlib
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from zoo.weights import BUNDLED

COLOURS = {"red": (215, 35, 35), "green": (35, 170, 50), "blue": (40, 70, 215)}
FAST_FIT = dict(backbone="tf_efficientnet_lite0", image_size=64, epochs=None, batch_size=16, max_seconds=None)


def colour_image(colour: str, seed: int, size: int = 40) -> Image.Image:
    """A noisy grey picture with a large rectangle of `colour` somewhere in it."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(128, 30, (size, size, 3))
    top, left = rng.integers(0, size // 3, 2)
    height, width = rng.integers(size // 2, size - size // 3, 2)
    pixels[top:top + height, left:left + width] = np.array(COLOURS[colour]) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def colour_zip(path: Path, per_class: int = 12, extra: dict[str, bytes] | None = None,
               colours: tuple[str, ...] = tuple(COLOURS)) -> Path:
    """A dataset zip as a user makes one: colours/<class>/<n>.png, plus any `extra` members."""
    with zipfile.ZipFile(path, "w") as archive:
        for colour in colours:
            for index in range(per_class):
                image = colour_image(colour, seed=1000 * list(COLOURS).index(colour) + index)
                with archive.open(f"colours/{colour}/{index:02d}.png", "w") as member:
                    image.save(member, format="PNG")
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
    return path


def free_port() -> int:
    """A port nobody listens on (gradio's server_port=0 does not work, see NOTES.md)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(zoo: Path) -> Iterator[str]:
    """The app, launched here on a free port over the zoo at `zoo`; yields its URL."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_DIR", str(zoo))
        import app
        from ui import launch_options

        _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                    quiet=True, **launch_options())
        try:
            yield url
        finally:
            app.demo.close()


def train(client: Client, zip_path: Path | None, strategy: str = "feature-extractor", name: str = "",
          target_zip: Path | None = None, balance: str = "auto", **settings):
    """Submit /train with the page's argument order; returns the running job."""
    options = {**FAST_FIT, **settings}
    return client.submit(handle_file(str(zip_path)) if zip_path else None, options["backbone"], strategy, name,
                         options["image_size"], options["epochs"], options["batch_size"], options["max_seconds"],
                         handle_file(str(target_zip)) if target_zip else None, balance, api_name="/train")


def table_rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def value(output):
    """An output's value, whether it came plain or as a gr.update(value=..., visible=...)."""
    return output.get("value") if isinstance(output, dict) and output.get("__type__") == "update" else output


def user_models(table: dict) -> list[str]:
    """The names in the zoo table, without the built-in ImageNet classifiers every zoo lists."""
    return [row["name"] for row in table_rows(table) if row["name"] not in BUNDLED]


def wait_for_update(job, condition) -> tuple:
    """The first update of a running gradio_client job that satisfies `condition`, waiting for each
    update as it arrives (on the job's own events, not on a clock); fails if the job ends first."""
    for update in job:
        if condition(update):
            return update
    raise AssertionError(f"the job ended before the awaited update: {job.outputs()[-1:] or job.status()}")
