"""Shared fixtures: one zoo (so bundled weights convert once and features cache once), real data.

Nothing here touches the network: HF_HUB_OFFLINE and gradio's analytics are switched off first
(and OpenMP waits passively, as in the entry points, before torch is imported). Gradio's upload
folder is this run's own: gradio files uploads by content hash under /tmp/gradio, and an app that
shuts down deletes its uploads there, so two runs side by side deleted each other's zips.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the entry points set it (zoo.malloc): shared cores
if "GRADIO_TEMP_DIR" not in os.environ:  # before gradio is imported: some of its modules read it then
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="transfer-zoo-tests-gradio-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from app_helpers import COLOURS, colour_image, colour_zip, serving, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"


@pytest.fixture(scope="session")
def zoo_path(tmp_path_factory) -> Path:
    """The session's zoo. Tests that need an empty zoo make their own."""
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's 1,797 handwritten digits as an image folder: digits/<0-9>/<n>.png (8x8, grey)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("data") / "digits"
    digits = load_digits()
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), "L").save(folder / f"{index:04d}.png")
    return root


@pytest.fixture(scope="session")
def digits_small(digits_dir, tmp_path_factory) -> Path:
    """40 digits per class (400 images): enough to train a network for a few epochs quickly."""
    root = tmp_path_factory.mktemp("data") / "digits-small"
    for folder in sorted(digits_dir.iterdir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:40]:
            shutil.copy(image, root / folder.name / image.name)
    return root


def run_python(code: str, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `code` in a FRESH Python process (nothing cached from this one)."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m ...` exactly as a user types it."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})


# --- the app, served in this process: one per test module that asks for it ---------------------------


@pytest.fixture(scope="module")
def app_zoo(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-zoo")


@pytest.fixture(scope="module")
def url(app_zoo) -> Iterator[str]:
    with serving(app_zoo) as address:
        yield address


@pytest.fixture(scope="module")
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def colours_zip(tmp_path_factory) -> Path:
    return colour_zip(tmp_path_factory.mktemp("upload") / "colours.zip")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> dict[str, Path]:
    """One new picture per colour, never seen in training."""
    folder = tmp_path_factory.mktemp("held-out")
    paths = {}
    for colour in COLOURS:
        paths[colour] = folder / f"new-{colour}.png"
        colour_image(colour, seed=10_000 + len(paths), size=56).save(paths[colour])
    return paths


@pytest.fixture(scope="module")
def trained(client, colours_zip, app_zoo):
    """One fine-tune of the uploaded zip through the app: (every yielded update, the final outputs, seconds)."""
    started = time.monotonic()
    job = train(client, colours_zip, name="colours-fe")
    updates = list(job)
    return updates, job.result(), time.monotonic() - started


# --- the browser tests' skip, in the line a user reads last --------------------------------------------


def pytest_report_teststatus(report, config):
    """A browser test skipped for want of Chromium is counted apart, so the final summary line says
    "3 browser tests skipped (no chromium)" rather than hiding it among the other skips."""
    if report.skipped and "browser" in report.keywords and "chromium" in str(report.longrepr).lower():
        return "browser tests skipped (no chromium)", "s", "SKIPPED (no chromium: apt-get install -y chromium)"
    return None


def pytest_terminal_summary(terminalreporter):
    if terminalreporter.stats.get("browser tests skipped (no chromium)"):
        terminalreporter.write_line("The browser tests need Debian's Chromium: sudo apt-get install -y chromium "
                                    "(see README, Testing); everything else ran.", yellow=True, bold=True)
