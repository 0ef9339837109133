"""The app under load, and the Hub token, with `python app.py` running as its own process.

One app for the module, started as a user starts it (benchmarks/app_load.py's `start_app`, the
same code the benchmark times), with HF_TOKEN set to a recognisable fake token and a zoo holding
one tiny model. Then: 8 users (each its own gradio_client session) make 200 predictions while a
fine-tune provably runs (it reports progress during the predictions and is still running after
the last answer), and a second fine-tune waits in the queue meanwhile, its place visible to its
client, and runs once the first is cancelled. Then: the token is in the app's environment and is
used, yet appears in no page, config, API answer, error, log line or saved model file.

Small on purpose (32 px images, a tiny random network to predict with, 24-image fits): under a
minute on 2 cores. The running fit is made far longer than the predictions (500 epochs at 128 px,
cancelled once they are done), so "still running after the last answer" does not depend on how
busy the machine is. The timings that matter are in benchmarks/app_load.py.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from app_load import Fit, RunningApp, hammer, start_app  # noqa: E402

TOKEN = "hf_tzFAKEtokenDoNotLeak4242"  # recognisable: grep for it anywhere
COLOURS = {"red": (215, 35, 35), "green": (35, 170, 50), "blue": (40, 70, 215)}


def colour_png(colour: str, seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.normal(COLOURS[colour], 25, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A dataset zip (3 colours x 8 images) and four pictures to predict."""
    folder = tmp_path_factory.mktemp("hostile-app-files")
    upload = folder / "colours.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        for number, colour in enumerate(COLOURS):
            for index in range(8):
                with archive.open(f"colours/{colour}/{index}.png", "w") as member:
                    colour_png(colour, 100 * number + index).save(member, format="PNG")
    pictures = []
    for index, colour in enumerate([*COLOURS, "red"]):
        pictures.append(str(folder / f"{index}-{colour}.png"))
        colour_png(colour, 9000 + index).save(pictures[-1])
    return {"zip": upload, "pictures": pictures}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A zoo holding 'tiny': a random test_efficientnet at 32 px (fast to answer; the answers do not matter)."""
    from zoo.model import ModelSpec, build_model
    from zoo.store import save_model

    root = tmp_path_factory.mktemp("hostile-app-zoo")
    spec = ModelSpec(architecture="test_efficientnet", label_names=list(COLOURS), image_size=32)
    save_model(build_model(spec).eval(), spec, {"strategy": "from-scratch"}, name="tiny", zoo=root)
    return root


@pytest.fixture(scope="module")
def app(zoo, tmp_path_factory) -> Iterator[RunningApp]:
    env = {**os.environ, "ZOO_DIR": str(zoo), "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}
    running = start_app(env, tmp_path_factory.mktemp("hostile-app-log") / "app.log")
    try:
        yield running
    finally:
        running.stop()


def test_eight_users_predict_while_a_fine_tune_runs_and_a_second_one_waits_its_turn(app, files, zoo):
    from gradio_client.utils import Status

    # a fit that cannot end by itself while 200 predictions are answered: 500 epochs of lite0 at 128 px
    # take minutes of CPU, twenty times what the predictions need, however loaded the machine is
    busy = Fit(app.url, files["zip"], strategy="from-scratch", name="busy", image_size=128, epochs=500, batch_size=8)
    training_since = busy.wait_until_training(timeout=120)
    # a second user's fine-tune: it waits, and its client sees where it stands
    queued = Fit(app.url, files["zip"], strategy="from-scratch", name="queued", image_size=32, epochs=2,
                 batch_size=8)
    deadline = time.monotonic() + 300  # a guard against a hang, not a speed limit
    while not any(status.code == Status.IN_QUEUE and status.rank is not None for _, status in queued.statuses):
        assert time.monotonic() < deadline, queued.statuses[-3:]
        time.sleep(0.05)
    waiting = next(status for _, status in queued.statuses if status.code == Status.IN_QUEUE and status.rank is not None)
    assert waiting.rank == 0 and waiting.queue_size >= 1  # first in line, behind the running fit

    load = hammer(app.url, "tiny", files["pictures"], clients=8, per_client=25)

    assert len(load.calls) == 200 and not load.errors, [call.error for call in load.errors[:3]]
    assert {call.user for call in load.calls} == set(range(8))
    assert all(call.label in COLOURS for call in load.calls)
    start, end = load.window
    assert training_since < start  # the fit was training before the first prediction...
    during = busy.updates_between(start, end)
    assert during and all("Starting" not in status for status in during)  # ...reported progress meanwhile...
    assert busy.running  # ...and was still running after the last answer
    assert queued.updates == [] and queued.job.status().code == Status.IN_QUEUE  # still waiting, no output yet
    print(f"200 predictions by 8 users in {end - start:.1f} s while fine-tuning: p50 {load.percentile_ms(0.5):.0f} ms, "
          f"p95 {load.percentile_ms(0.95):.0f} ms; {len(during)} fit updates meanwhile")

    assert "Stopping" in busy.cancel()
    assert busy.result(timeout=60)[0] == "**Cancelled.** Nothing was saved."
    cancelled_at = time.monotonic()
    status, *_ = queued.result(timeout=120)
    assert "Saved as `queued`" in status
    assert queued.updates[0][0] >= cancelled_at - 1  # it started only once the first fit was gone
    assert not (zoo / "busy").exists() and (zoo / "queued" / "README.md").is_file()


def test_the_hub_token_is_used_but_never_shown(app, files, zoo):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    # the fault is real: the app process holds the token, and its Hub actions reach for it
    assert TOKEN.encode() in Path(f"/proc/{app.process.pid}/environ").read_bytes()
    client = Client(app.url, verbose=False)
    answers, errors = [], []
    for arguments, api_name in [(("tiny", "", True), "/push_model"), (("someone/model", ""), "/pull_model"),
                                (("",), "/list_hub_models"), (("nope", "", True), "/push_model")]:
        with pytest.raises(AppError) as error:
            client.predict(*arguments, api_name=api_name)
        errors.append(str(error.value))
    assert not any("No Hugging Face token" in message for message in errors), errors  # it was found and used
    # every answer a visitor can get
    answers.append(client.predict("", None, api_name="/list_zoo"))
    answers.append(client.predict("tiny", handle_file(files["pictures"][0]), 3, "", api_name="/predict"))
    answers.append(client.predict("tiny", api_name="/model_card"))
    answers.append(client.predict(handle_file(str(files["zip"])), api_name="/inspect_dataset"))
    exported = client.predict("tiny", api_name="/export_model")
    answers.append(exported)
    with zipfile.ZipFile(exported) as archive:
        answers += [archive.read(member).decode("utf-8", "replace") for member in archive.namelist()]
    # every page and description the server hands out
    served = {}
    for path in ["", "config", "gradio_api/info", "gradio_api/openapi.json", "manifest.json", "theme.css"]:
        try:
            with urllib.request.urlopen(app.url + path, timeout=10) as response:
                served[path] = response.read().decode("utf-8", "replace")
        except OSError:
            continue
    assert {"", "config", "gradio_api/info"} <= set(served)
    assert "push_model" in served["config"]  # the config describes the Hub endpoints, yet not the token
    for where, text in [*((f"error {n}", e) for n, e in enumerate(errors)),
                        *((f"answer {n}", str(a)) for n, a in enumerate(answers)), *served.items()]:
        assert TOKEN not in text, where
    # nothing written to the zoo holds it either: model cards, descriptions, caches, exports
    for path in zoo.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_the_app_log_never_shows_the_token(app):
    app.stop()  # everything it had to say is written
    log = app.log_text()
    assert "Running on" in log or "127.0.0.1" in log, log[-2000:]  # the log was captured
    assert TOKEN not in log
