"""A model deleted or replaced WHILE another request uses it: that request fails cleanly.

Each test holds a real request inside the zoo (mid-load or mid-inference) at a gate, changes the
model on disk meanwhile, shows that the change really happened under the request (the folder is
gone, or the inference really ran on the old network), then lets the request go on. It must end in
a `ZooError` / `gr.Error` that says what happened: no traceback, and never an answer from a model
that is no longer the one under that name. Through `zoo.predict` and through the app's /predict.

(A pulled Hub repo with unexpected files or wrong tensor shapes: tests/test_hub.py,
`test_pull_refuses_bad_repositories_and_writes_nothing`.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import zoo.predict as predicting
import zoo.catalog as catalog
from conftest import ASSETS
from app_helpers import serving  # the app launched in this process, as the app tests do
from zoo import ZooError
from zoo.predict import ModelCache, predict
from zoo.catalog import remove_model
from zoo.store import save_model

IMAGES = sorted(str(p) for p in (ASSETS / "digits").glob("*/*.png"))[:2]


def tiny_model(labels: tuple[str, ...], bias: float = 0.0):
    """A random tiny timm network and its spec; `bias` pushes every answer towards the first label."""
    from zoo.model import ModelSpec, build_model

    spec = ModelSpec(architecture="test_efficientnet", label_names=list(labels), image_size=32)
    model = build_model(spec).eval()
    with torch.no_grad():
        model.get_classifier().bias.copy_(torch.tensor([bias] + [0.0] * (len(labels) - 1)))
    return model, spec


def save_tiny(zoo: Path, labels: tuple[str, ...], *, bias: float = 0.0, overwrite: bool = False) -> None:
    model, spec = tiny_model(labels, bias)
    save_model(model, spec, {"strategy": "from-scratch", "labels": list(labels)}, name="m", zoo=zoo,
               overwrite=overwrite)


class Gate:
    """Wraps a function so that its first call stops until `release()`; records what the real call did."""

    def __init__(self, real: Callable, *, before: bool):
        self.real, self.before = real, before  # stop before the real call, or after it (result in hand)
        self.entered, self.released = threading.Event(), threading.Event()
        self.outcome: object = None  # the real call's result or exception
        self._used = False

    def __call__(self, *args, **kwargs):
        first, self._used = not self._used, True
        if first and self.before:
            self._stop()
        try:
            self.outcome = result = self.real(*args, **kwargs)
        except Exception as error:
            self.outcome = error
            raise
        if first and not self.before:
            self._stop()
        return result

    def _stop(self) -> None:
        self.entered.set()
        assert self.released.wait(60), "the test never released the gate"

    def wait(self) -> None:
        assert self.entered.wait(60), "the request never reached the gate"

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def zoo(tmp_path) -> Path:
    save_tiny(tmp_path / "zoo", ("a", "b"), bias=5.0)  # says "a"
    return tmp_path / "zoo"


def in_background(call: Callable):
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


# --- through zoo.predict ----------------------------------------------------------------------------


def test_deleted_while_a_prediction_runs_gives_no_answer(zoo, monkeypatch):
    cache = ModelCache()
    assert predict("m", IMAGES, zoo=zoo, cache=cache)[0][0]["label"] == "a"  # loaded and cached
    gate = Gate(predicting.probabilities, before=False)
    monkeypatch.setattr(predicting, "probabilities", gate)
    request = in_background(lambda: predict("m", IMAGES, zoo=zoo, cache=cache))
    gate.wait()  # the inference has run on the loaded model; the answer is not out yet
    remove_model("m", zoo=zoo)
    assert not (zoo / "m").exists()
    gate.release()
    with pytest.raises(ZooError, match=r"Model 'm' was deleted while this request used it") as error:
        request.result(timeout=60)
    assert isinstance(gate.outcome, torch.Tensor) and gate.outcome.shape == (2, 2)  # an answer WAS computed
    assert "Traceback" not in str(error.value)
    with pytest.raises(ZooError, match="No model named 'm'"):
        predict("m", IMAGES, zoo=zoo, cache=cache)


def test_replaced_while_a_prediction_runs_gives_no_stale_answer(zoo, monkeypatch):
    cache = ModelCache()
    assert predict("m", IMAGES, zoo=zoo, cache=cache)[0][0]["label"] == "a"
    gate = Gate(predicting.probabilities, before=False)
    monkeypatch.setattr(predicting, "probabilities", gate)
    request = in_background(lambda: predict("m", IMAGES, zoo=zoo, cache=cache))
    gate.wait()
    save_tiny(zoo, ("x", "y", "z"), bias=5.0, overwrite=True)  # someone saves a new "m" over it
    gate.release()
    with pytest.raises(ZooError, match=r"Model 'm' was replaced while this request used it.*Try again"):
        request.result(timeout=60)
    assert gate.outcome.shape == (2, 2)  # the old two-class network had answered: that answer is stale
    assert predict("m", IMAGES, zoo=zoo, cache=cache)[0][0]["label"] == "x"  # the new version answers


def test_deleted_while_loading_fails_cleanly(zoo, monkeypatch):
    gate = Gate(catalog.load_folder_model, before=True)
    monkeypatch.setattr(catalog, "load_folder_model", gate)
    request = in_background(lambda: predict("m", IMAGES, zoo=zoo, cache=ModelCache()))
    gate.wait()  # the entry was read; the weights are about to be
    remove_model("m", zoo=zoo)
    assert not (zoo / "m").exists()
    gate.release()
    with pytest.raises(ZooError, match=r"Model 'm' was deleted while this request used it"):
        request.result(timeout=60)
    assert isinstance(gate.outcome, ZooError)  # the weights really were gone under the load


def test_replaced_while_loading_answers_from_the_new_version_only(zoo, monkeypatch):
    gate = Gate(catalog.load_folder_model, before=True)
    monkeypatch.setattr(catalog, "load_folder_model", gate)
    request = in_background(lambda: predict("m", IMAGES, zoo=zoo, cache=ModelCache()))
    gate.wait()  # holding the OLD spec (two classes), about to read weights
    save_tiny(zoo, ("x", "y", "z"), bias=5.0, overwrite=True)
    gate.release()
    answer = request.result(timeout=60)
    assert [row[0]["label"] for row in answer] == ["x", "x"]  # the new model, whole: its labels, its weights
    assert all({r["label"] for r in rows} <= {"x", "y", "z"} for rows in answer)


# --- through the app's /predict ---------------------------------------------------------------------


def test_app_predict_of_a_model_another_user_deletes_meanwhile_is_a_clear_error(zoo, monkeypatch, capfd):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    with serving(zoo) as url:
        user, other = Client(url, verbose=False), Client(url, verbose=False)
        assert user.predict("m", handle_file(IMAGES[0]), 2, "", api_name="/predict")["label"] == "a"
        gate = Gate(predicting.probabilities, before=False)
        monkeypatch.setattr(predicting, "probabilities", gate)
        job = user.submit("m", handle_file(IMAGES[0]), 2, "", api_name="/predict")
        gate.wait()  # the app's worker holds the answer of the old model
        assert "Deleted **m**" in other.predict("m", api_name="/delete_model")  # while the request runs
        assert not (zoo / "m").exists()
        gate.release()
        with pytest.raises(AppError, match=r"Model 'm' was deleted while this request used it") as error:
            job.result(timeout=60)
        assert isinstance(gate.outcome, torch.Tensor)  # the stale answer existed; it was not sent
        assert "Traceback" not in str(error.value)
        with pytest.raises(AppError, match="No model named 'm'"):
            user.predict("m", handle_file(IMAGES[0]), 2, "", api_name="/predict")
    log = capfd.readouterr().err  # the server's log (it runs in this process)
    assert "Traceback" not in log  # a user's error is not a server fault: no traceback in the log
