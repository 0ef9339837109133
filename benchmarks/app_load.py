"""The app under load: start-up time, then 8 users predicting at once while a fine-tune runs.

    python benchmarks/app_load.py [--per-client 25]   # standalone: a throwaway zoo, assets/digits

`measure_app(env, data, photos)` is the "app" row of benchmarks/run.py. It starts `python app.py`
as a user would (its own process, `env` as given, a free port), times the start-up to the first
answered HTTP request, uploads a zip of `data` to /train and, once that fit is really training,
lets 8 threads, each with its own `gradio_client.Client` (its own session), make 25 /predict calls
each with `photos`. The fit is a `from-scratch` one (every layer trains, and it never stops early
by itself, so it keeps both cores busy for the whole window); it is cancelled afterwards. The
answer says whether the fit was provably running through the predictions: it reported progress
during the window and was still running after the last answer.

The pieces (`start_app`, `dataset_zip`, `Fit`, `hammer`) are what tests/test_hostile_app.py
drives too, with a tiny model and tiny data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def free_port() -> int:
    """A port nobody listens on (gradio's port 0 does not work; see NOTES.md)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the app as its own process --------------------------------------------------------------------


@dataclass
class RunningApp:
    process: subprocess.Popen
    url: str
    startup_seconds: float  # from the process start to the first answered HTTP request
    log: Path  # its stdout and stderr

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start_app(env: dict, log: Path, *, timeout: float = 240) -> RunningApp:
    """`python app.py` with `env` (plus a free port on 127.0.0.1), once it answers HTTP."""
    port = free_port()
    env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    app = RunningApp(process, url, 0.0, log)
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited ({process.returncode}) before serving:\n{app.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.perf_counter() - started > timeout:
            app.stop()
            raise RuntimeError(f"app.py did not answer within {timeout:.0f} s:\n{app.log_text()[-3000:]}")
        time.sleep(0.05)
    app.startup_seconds = time.perf_counter() - started
    return app


# --- data ------------------------------------------------------------------------------------------------


def dataset_zip(folder: Path, target: Path, *, per_class: int | None = None) -> Path:
    """`folder` zipped as a user would (folder/[split/]class/image), at most `per_class` images
    from each class folder of each split."""
    with zipfile.ZipFile(target, "w") as archive:
        for class_folder in sorted({path.parent for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES}):
            images = sorted(path for path in class_folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
            for image in images[:per_class]:
                archive.write(image, f"{folder.name}/{image.relative_to(folder).as_posix()}")
    return target


# --- a fine-tune through /train --------------------------------------------------------------------------


class Fit:
    """One /train job on its own client (its own session), and when each of its updates arrived."""

    def __init__(self, url: str, zip_path: Path, *, strategy: str, name: str, image_size: int, epochs: int,
                 backbone: str = "tf_efficientnet_lite0", batch_size: int = 16):
        from gradio_client import Client, handle_file

        self.client = Client(url, verbose=False)
        self.updates: list[tuple[float, str]] = []  # (time.monotonic(), status text) as each update came
        self.statuses: list[tuple[float, object]] = []  # (time, gradio_client StatusUpdate) while it waits
        self.job = self.client.submit(handle_file(str(zip_path)), backbone, strategy, name, image_size, epochs,
                                      batch_size, 0, api_name="/train")
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="fit-watcher")
        self._watcher.start()

    def _watch(self) -> None:
        seen = 0
        while True:
            done = self.job.done()
            outputs = self.job.outputs()
            for output in outputs[seen:]:
                self.updates.append((time.monotonic(), str(output[0])))
            seen = len(outputs)
            if not seen:
                self.statuses.append((time.monotonic(), self.job.status()))
            if done:
                return
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return not self.job.done()

    def wait_until_training(self, timeout: float = 300) -> float:
        """Wait until the fit reports progress past "Starting"; returns that moment (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while True:
            training = [moment for moment, status in self.updates if "Starting" not in status]
            if training:
                return training[0]
            if self.job.done():
                raise RuntimeError(f"the fit ended before it trained: {self.updates[-1:] or self.job.result()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fit did not start training within {timeout:.0f} s: {self.job.status()}")
            time.sleep(0.05)

    def updates_between(self, start: float, end: float) -> list[str]:
        return [status for moment, status in self.updates if start <= moment <= end]

    def cancel(self) -> str:
        return self.client.predict(api_name="/cancel")

    def result(self, timeout: float = 300):
        return self.job.result(timeout=timeout)


# --- many users predicting at once -----------------------------------------------------------------------


@dataclass
class Call:
    user: int
    started: float  # time.monotonic()
    ended: float
    label: str | None = None
    error: str | None = None

    @property
    def milliseconds(self) -> float:
        return (self.ended - self.started) * 1000


@dataclass
class Load:
    calls: list[Call] = field(default_factory=list)

    @property
    def errors(self) -> list[Call]:
        return [call for call in self.calls if call.error is not None]

    @property
    def window(self) -> tuple[float, float]:
        return min(call.started for call in self.calls), max(call.ended for call in self.calls)

    def percentile_ms(self, fraction: float) -> float:
        times = sorted(call.milliseconds for call in self.calls if call.error is None)
        if not times:
            return float("nan")
        return times[min(len(times) - 1, round(fraction * (len(times) - 1)))]


def hammer(url: str, model: str, images: list[str], *, clients: int = 8, per_client: int = 25,
           top_k: int = 3) -> Load:
    """`clients` threads, each with its own Client, make `per_client` /predict calls each, all at once."""
    from gradio_client import Client, handle_file

    sessions = [Client(url, verbose=False) for _ in range(clients)]  # connecting is not timed
    ready = threading.Barrier(clients)
    load, lock = Load(), threading.Lock()

    def user(index: int) -> None:
        ready.wait()
        for number in range(per_client):
            image = images[(index + number) % len(images)]
            started = time.monotonic()
            try:
                answer = sessions[index].predict(model, handle_file(image), top_k, "", api_name="/predict")
                call = Call(index, started, time.monotonic(), label=answer["label"])
            except Exception as error:  # counted, not raised: the load goes on
                call = Call(index, started, time.monotonic(), error=f"{type(error).__name__}: {error}")
            with lock:
                load.calls.append(call)

    threads = [threading.Thread(target=user, args=(index,), name=f"user-{index}") for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return load


# --- the benchmark row ------------------------------------------------------------------------------------


def measure_app(env: dict, data: Path, photos: list[str], *, clients: int = 8, per_client: int = 25) -> dict:
    """Start-up time of `python app.py`, then /predict latency for `clients` x `per_client` calls while
    a fit of (a subset of) `data` runs. Predicts with 'bench-fe' when the zoo has it, else the built-in
    tf_efficientnet_lite0."""
    work = Path(tempfile.mkdtemp(prefix="tz-app-load-"))
    zoo = Path(env["ZOO_DIR"])
    model = "bench-fe" if (zoo / "bench-fe").is_dir() else "tf_efficientnet_lite0"
    try:
        upload = dataset_zip(data, work / f"{data.name}.zip", per_class=20)
        app = start_app(env, work / "app.log")
        try:
            from gradio_client import Client, handle_file

            Client(app.url, verbose=False).predict(model, handle_file(photos[0]), 1, "", api_name="/predict")  # loads it
            fit = Fit(app.url, upload, strategy="from-scratch", name=f"app-load-{os.getpid()}", image_size=64,
                      epochs=500)
            fit.wait_until_training()
            load = hammer(app.url, model, photos, clients=clients, per_client=per_client)
            start, end = load.window
            overlapped = bool(fit.updates_between(start, end)) and fit.running
            fit.cancel()
            fit.result(timeout=120)
        finally:
            app.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"startup_seconds": app.startup_seconds, "requests": len(load.calls), "clients": clients,
            "model": model, "p50_ms": load.percentile_ms(0.5), "p95_ms": load.percentile_ms(0.95),
            "errors": len(load.errors), "first_errors": [call.error for call in load.errors[:3]],
            "seconds": end - start, "training_overlapped": overlapped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-client", type=int, default=25)
    parser.add_argument("--data", type=Path, default=ROOT / "assets" / "digits", help="a folder of class folders")
    args = parser.parse_args()
    zoo = Path(tempfile.mkdtemp(prefix="tz-app-zoo-"))
    env = {**os.environ, "ZOO_DIR": str(zoo), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    photos = [str(path) for path in sorted((ROOT / "assets" / "photos").glob("*.jpg"))]
    try:
        row = measure_app(env, args.data, photos, per_client=args.per_client)
    finally:
        shutil.rmtree(zoo, ignore_errors=True)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
