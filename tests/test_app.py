"""The Gradio app, driven through its API with `gradio_client`, exactly as a script (or the page) would.

The app is launched in this process on a free port with its own empty zoo (`ZOO_DIR`), so the
tests see exactly what they put there. The data is tiny and generated: three colours, which the
real bundled ImageNet backbone tells apart at 64 px, so a fit takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import run_python
from test_text import xor_dir  # noqa: F401  (a fixture: the image+text task, reused)
from zoo.store import remove_model
from zoo.weights import BUNDLED

COLOURS = {"red": (215, 35, 35), "green": (35, 170, 50), "blue": (40, 70, 215)}
FAST_FIT = dict(backbone="tf_efficientnet_lite0", image_size=64, epochs=None, batch_size=16, max_seconds=None)


# --- helpers shared with test_browser.py ------------------------------------------------------------


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

        _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                    quiet=True, **app.launch_options())
        try:
            yield url
        finally:
            app.demo.close()


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_zoo(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-zoo")


@pytest.fixture(scope="module")
def url(app_zoo) -> Iterator[str]:
    with serving(app_zoo) as address:
        yield address


@pytest.fixture(scope="module")
def client(url) -> Client:
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


def train(client: Client, zip_path: Path | None, strategy: str = "feature-extractor", name: str = "", **settings):
    """Submit /train with the page's argument order; returns the running job."""
    options = {**FAST_FIT, **settings}
    return client.submit(handle_file(str(zip_path)) if zip_path else None, options["backbone"], strategy, name,
                         options["image_size"], options["epochs"], options["batch_size"], options["max_seconds"],
                         api_name="/train")


@pytest.fixture(scope="module")
def trained(client, colours_zip, app_zoo):
    """One fine-tune of the uploaded zip through the app: (every yielded update, the final outputs, seconds)."""
    started = time.monotonic()
    job = train(client, colours_zip, name="colours-fe")
    updates = list(job)
    return updates, job.result(), time.monotonic() - started


def table_rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def value(output):
    """An output's value, whether it came plain or as a gr.update(value=..., visible=...)."""
    return output.get("value") if isinstance(output, dict) and output.get("__type__") == "update" else output


def user_models(table: dict) -> list[str]:
    """The names in the zoo table, without the built-in ImageNet classifiers every zoo lists."""
    return [row["name"] for row in table_rows(table) if row["name"] not in BUNDLED]


# --- the zoo ----------------------------------------------------------------------------------------


def test_an_empty_zoo_lists_nothing(client, app_zoo):
    if any(path.name != "cache" for path in app_zoo.iterdir()):
        pytest.skip("the zoo is not empty any more (tests ran out of order)")
    table, *_ = client.predict("", None, api_name="/list_zoo")
    assert table["headers"] == ["name", "backbone", "strategy", "classes", "accuracy", "created"]
    assert user_models(table) == []


def test_fine_tune_an_uploaded_zip_end_to_end(trained, client, app_zoo):
    updates, final, seconds = trained
    status, accuracy, loss, results, per_class, confusion = map(value, final[:6])
    assert "Saved as `colours-fe`" in status
    # the page got updates while it ran (the live curve is checked on a longer run below)
    assert len(updates) >= 3 and all("Starting" in update[0] or "elapsed" in update[0] for update in updates[:-1])
    assert {row[2] for row in loss["data"]} == {"training", "validation"}
    assert {row[2] for row in accuracy["data"]} == {"accuracy"}
    assert max(row[0] for row in accuracy["data"]) >= 3  # several epochs plotted
    assert all(0 <= row[1] <= 1 for row in accuracy["data"])
    # the results a user reads: accuracy on 6 validation images, per class, confusion matrix
    assert "accuracy" in results and "On 6 validation images" in results
    assert [row[0] for row in per_class["data"]] == ["blue", "green", "red"]
    assert confusion["headers"][1:] == ["blue", "green", "red"]
    matrix = [row[1:] for row in confusion["data"]]
    assert sum(map(sum, matrix)) == 6
    assert sum(matrix[i][i] for i in range(3)) >= 5  # colours are easy for an ImageNet backbone
    assert (app_zoo / "colours-fe" / "model.safetensors").is_file()
    print(f"fine-tune through the API: {seconds:.1f} s")


def test_the_trained_model_is_listed_with_its_facts(trained, client):
    table, selected, card = client.predict("", None, api_name="/list_zoo")
    rows = {row["name"]: row for row in table_rows(table)}
    row = rows["colours-fe"]
    assert row["backbone"] == "tf_efficientnet_lite0" and row["strategy"] == "feature-extractor"
    assert row["classes"] == "blue, green, red" and row["accuracy"].endswith("(val)")
    assert value(selected) == "colours-fe"  # the newest model is selected, its card shown
    assert card.startswith("# colours-fe") and "feature-extractor" in card and "---" not in card[:3]
    table, *_ = client.predict("green feature-extractor", None, api_name="/search_zoo")  # a class and a strategy
    assert [row["name"] for row in table_rows(table)] == ["colours-fe"]
    table, *_ = client.predict("no-such-thing", None, api_name="/search_zoo")
    assert table["data"] == []
    assert client.predict("colours-fe", api_name="/model_card") == card
    with pytest.raises(AppError, match="No model named 'nope'"):
        client.predict("nope", api_name="/model_card")


def test_predict_names_the_colour_of_new_pictures(trained, client, held_out):
    for colour, path in held_out.items():
        answer = client.predict("colours-fe", handle_file(str(path)), 3, "", api_name="/predict")
        assert answer["label"] == colour, answer
        confidences = answer["confidences"]
        assert len(confidences) == 3 and {c["label"] for c in confidences} == set(COLOURS)
        assert confidences[0]["confidence"] >= confidences[-1]["confidence"]


def test_predict_several_images_at_once(trained, client, held_out):
    files = [handle_file(str(path)) for path in held_out.values()]
    table = client.predict("colours-fe", files, 2, api_name="/predict_batch")
    rows = table_rows(table)
    assert [row["image"] for row in rows] == [path.name for path in held_out.values()]
    assert [row["label"] for row in rows] == list(held_out)
    assert all(0 < row["score"] <= 1 for row in rows)


def test_predict_without_a_model_or_image_says_what_to_do(trained, client, held_out):
    with pytest.raises(AppError, match="Pick a model first"):
        client.predict(None, handle_file(str(held_out["red"])), 3, "", api_name="/predict")
    with pytest.raises(AppError, match="Upload an image"):
        client.predict("colours-fe", None, 3, "", api_name="/predict")
    with pytest.raises(AppError, match="No model named 'gone'"):
        client.predict("gone", handle_file(str(held_out["red"])), 3, "", api_name="/predict")


# --- the dataset before training ---------------------------------------------------------------------


def test_inspect_reports_classes_counts_thumbnails_and_skipped_files(client, tmp_path):
    upload = colour_zip(tmp_path / "messy.zip", per_class=6,
                        extra={"colours/red/notes.txt": b"hello", "colours/blue/broken.png": b"not a png"})
    summary, counts, thumbs, skipped, *_ = client.predict(handle_file(str(upload)), api_name="/inspect_dataset")
    assert "**colours**: 3 classes" in summary and "2 file(s) skipped" in summary
    by_class = {}
    for label, split, count in counts["data"]:
        by_class.setdefault(label, {})[split] = count
    assert by_class == {colour: {"train": 5, "val": 1, "test": 0} for colour in ("blue", "green", "red")}
    assert len(thumbs) == 12 and {thumb["caption"] for thumb in thumbs} == set(COLOURS)
    reasons = {file: reason for file, reason in value(skipped)["data"]}
    assert reasons["red/notes.txt"] == "not an image (.txt)"
    assert "not an image Pillow can read" in reasons["blue/broken.png"]


def test_example_dataset_button_loads_the_digits(client):
    example = client.predict(api_name="/example_dataset")
    assert Path(example).name == "digits.zip"
    summary, counts, thumbs, *_ = client.predict(handle_file(example), api_name="/inspect_dataset")
    assert "**digits**: 10 classes, 160 training / 40 validation images" in summary
    assert {row[0] for row in counts["data"]} == {str(digit) for digit in range(10)}
    assert len(thumbs) == 40  # four per class


@pytest.mark.parametrize(("make_upload", "message"), [
    (lambda folder: folder / "photo.jpg", r"Invalid file type.*\.zip"),  # gradio's own check (file_types)
    (lambda folder: colour_zip(folder / "one.zip", colours=("red",)), "need at least 2 class folders"),
    (lambda folder: colour_zip(folder / "tiny.zip", per_class=1), "has no validation image"),
    (lambda folder: folder / "fake.zip", "not a folder or a zip file"),
])
def test_bad_uploads_end_in_a_message_saying_what_to_fix(client, tmp_path, make_upload, message):
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8 not really")
    (tmp_path / "fake.zip").write_bytes(b"PK but no zip")
    with pytest.raises(AppError, match=message) as error:
        client.predict(handle_file(str(make_upload(tmp_path))), api_name="/inspect_dataset")
    assert "Traceback" not in str(error.value)


def test_upload_limits_are_explained(client, colours_zip, monkeypatch):
    monkeypatch.setenv("APP_MAX_IMAGES", "20")
    with pytest.raises(AppError, match="holds 36 images; this app takes at most 20"):
        client.predict(handle_file(str(colours_zip)), api_name="/inspect_dataset")
    monkeypatch.setenv("APP_MAX_IMAGES", "5000")
    monkeypatch.setenv("APP_MAX_UPLOAD_MB", "1")
    big = colours_zip.parent / "big.zip"
    colour_zip(big, per_class=2, extra={"colours/padding.bin": np.random.default_rng(0).bytes(3 << 19)})
    with pytest.raises(AppError, match=r"this app takes zips up to 1 MB"):
        client.predict(handle_file(str(big)), api_name="/inspect_dataset")


def test_training_refuses_bad_settings_before_starting(trained, client, colours_zip, app_zoo):
    before = sorted(path.name for path in app_zoo.iterdir())
    cases = [
        (dict(zip_path=None), "Upload a .zip"),
        (dict(name="colours-fe"), "already in the zoo"),
        (dict(name="no/slashes"), "Invalid model name"),
        (dict(image_size=5), "Image size must be a whole number from 16 to 1024"),
        (dict(backbone="no_such_net"), "Unknown backbone 'no_such_net'"),
    ]
    for settings, message in cases:
        zip_path = settings.pop("zip_path", colours_zip)
        with pytest.raises(AppError, match=message):
            train(client, zip_path, **settings).result()
    assert sorted(path.name for path in app_zoo.iterdir()) == before


# --- behaviour under use -------------------------------------------------------------------------------


def test_predictions_answer_while_training_and_cancel_saves_nothing(trained, client, url, colours_zip, app_zoo,
                                                                     held_out):
    job = train(client, colours_zip, strategy="from-scratch", name="colours-cancelled", epochs=200)
    deadline = time.monotonic() + 120
    while not any(" · epoch " in update[0] for update in job.outputs()):
        assert time.monotonic() < deadline and not job.done(), job.outputs()[-1:] or job.status()
        time.sleep(0.2)
    # the live curves: points arrive while the fit is still running
    while not any(value(update[2]) for update in job.outputs()):
        assert time.monotonic() < deadline and not job.done()
        time.sleep(0.2)
    live_loss = next(value(update[2]) for update in job.outputs() if value(update[2]))
    assert live_loss["data"] and {row[2] for row in live_loss["data"]} <= {"training", "validation"}
    # another user predicts while the fit runs: answered at once, not queued behind it
    other = Client(url, verbose=False)
    answer = other.predict("colours-fe", handle_file(str(held_out["blue"])), 1, "", api_name="/predict")
    assert answer["label"] == "blue" and not job.done()
    # cancel (same session: the run lives in this user's state)
    assert "Stopping" in client.predict(api_name="/cancel")
    status, accuracy, *_ = job.result()
    assert status == "**Cancelled.** Nothing was saved."
    assert max(row[0] for row in accuracy["data"]) < 200  # from-scratch never stops early by itself
    assert not (app_zoo / "colours-cancelled").exists()
    assert not any(path.name.startswith(".staging") for path in app_zoo.iterdir())
    assert client.predict(api_name="/cancel") == "Nothing is training right now."


def test_rename_and_delete_locally(trained, client, app_zoo):
    shutil.copytree(app_zoo / "colours-fe", app_zoo / "colours-copy")
    message, selected = client.predict("colours-copy", "colours-renamed", api_name="/rename_model")
    assert "Renamed **colours-copy** to **colours-renamed**" in message and selected == "colours-renamed"
    with pytest.raises(AppError, match="already exists"):
        client.predict("colours-renamed", "colours-fe", api_name="/rename_model")
    assert "Deleted **colours-renamed**" in client.predict("colours-renamed", api_name="/delete_model")
    table, *_ = client.predict("", None, api_name="/list_zoo")
    assert user_models(table) == ["colours-fe"]
    with pytest.raises(AppError, match="No model named 'colours-renamed'"):
        client.predict("colours-renamed", api_name="/delete_model")


def test_export_and_import_a_model_zip(trained, client, held_out):
    from zoo import store

    if not hasattr(store, "export_model"):
        pytest.skip("zoo.store has no export/import in this version")
    exported = client.predict("colours-fe", api_name="/export_model")
    assert Path(exported).name == "colours-fe.zip"
    with zipfile.ZipFile(exported) as archive:
        assert sorted(archive.namelist()) == [f"colours-fe/{file}" for file in
                                              ("README.md", "config.json", "model.safetensors", "transfer.json")]
    message, selected = client.predict(handle_file(exported), "colours-imported", api_name="/import_model")
    assert message == "Imported **colours-imported**." and selected == "colours-imported"
    answer = client.predict("colours-imported", handle_file(str(held_out["green"])), 1, "", api_name="/predict")
    assert answer["label"] == "green"
    with pytest.raises(AppError, match="already exists"):
        client.predict(handle_file(exported), "colours-imported", api_name="/import_model")
    client.predict("colours-imported", api_name="/delete_model")


@pytest.mark.parametrize("sign_in", ["configured", "missing"])
def test_on_a_space_visitors_cannot_delete_rename_or_use_the_hub(trained, client, app_zoo, colours_zip, monkeypatch,
                                                                 sign_in):
    monkeypatch.setenv("SPACE_ID", "alice/transfer-zoo")
    monkeypatch.setenv("HF_TOKEN", "hf_the_space_owners_secret")
    if sign_in == "configured":
        monkeypatch.setenv("OAUTH_CLIENT_ID", "the-spaces-oauth-app")
    expected = r"Sign in with Hugging Face.* owner \(alice\)" if sign_in == "configured" else r"only its owner \(alice\)"
    for call, arguments in [("/delete_model", ("colours-fe",)), ("/rename_model", ("colours-fe", "mine")),
                            ("/push_model", ("colours-fe", "mallory/stolen", False)),
                            ("/pull_model", ("mallory/bad", "")), ("/list_hub_models", ("alice",)),
                            ("/import_model", (handle_file(str(colours_zip)), "mine"))]:
        with pytest.raises(AppError, match=expected) as error:
            client.predict(*arguments, api_name=call)
        assert "hf_the_space_owners_secret" not in str(error.value)
    for backbone in ("hf-hub:alice/private-model", "tf_efficientnet_lite0@/etc/passwd"):
        with pytest.raises(AppError, match=expected):
            train(client, colours_zip, name="visitor", backbone=backbone).result()
        with pytest.raises(AppError, match=expected):
            client.predict(handle_file(str(colours_zip)), backbone, 64, 0, 0, api_name="/advise")
        with pytest.raises(AppError, match=expected):
            client.predict(handle_file(str(colours_zip)), backbone, 10, 64, "visitor", api_name="/compare")
    assert (app_zoo / "colours-fe" / "model.safetensors").is_file() and not (app_zoo / "mine").exists()
    # browsing and predicting stay open to everyone
    table, *_ = client.predict("", None, api_name="/list_zoo")
    assert "colours-fe" in [row["name"] for row in table_rows(table)]


def test_only_the_signed_in_owner_passes_on_a_space():
    import gradio as gr

    from app import AppConfig, require_owner

    space = AppConfig.from_env({"SPACE_ID": "Alice/zoo", "OAUTH_CLIENT_ID": "x", "APP_ADMINS": "bob"})
    assert space.owners == ("alice", "bob") and space.max_train_seconds == 600
    require_owner("delete models", profile("alice"), space)
    require_owner("delete models", profile("bob"), space)
    with pytest.raises(gr.Error, match="Sign in with Hugging Face"):
        require_owner("delete models", None, space)
    with pytest.raises(gr.Error, match="you are signed in as mallory"):
        require_owner("delete models", profile("mallory"), space)
    local = AppConfig.from_env({})
    assert not local.on_space and local.max_train_seconds is None
    require_owner("delete models", None, local)  # locally everything is allowed


def profile(username: str):
    import gradio as gr

    return gr.OAuthProfile({"name": username, "preferred_username": username, "profile": "", "picture": ""})


def test_hub_panel_shows_with_a_token_and_on_a_space_only_to_its_owner(monkeypatch):
    pytest.importorskip("zoo.hub")
    import app

    monkeypatch.setenv("HF_TOKEN", "hf_a_token")
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.hub_panel(None)["visible"] is True  # locally: whoever runs the app
    monkeypatch.setenv("SPACE_ID", "alice/transfer-zoo")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "the-spaces-oauth-app")
    assert app.hub_panel(None)["visible"] is False
    assert app.hub_panel(profile("mallory"))["visible"] is False
    assert app.hub_panel(profile("alice"))["visible"] is True


def test_text_box_only_for_models_that_take_text(trained, app_zoo, tmp_path):
    import app
    from transfer.fit import fit
    from zoo.store import remove_model

    data = tmp_path / "captioned"
    rows = []
    for colour in ("red", "blue"):
        (data / colour).mkdir(parents=True)
        for index in range(5):
            colour_image(colour, seed=index).save(data / colour / f"{index}.png")
            rows.append(f'{{"file_name": "{colour}/{index}.png", "text": "a {colour} box"}}')
    (data / "metadata.jsonl").write_text("\n".join(rows))
    fit(data, image_size=32, zoo=app_zoo, name="captioned", text_encoder="hashing")
    assert app.model_inputs("captioned")["visible"] is True
    assert app.model_inputs("colours-fe")["visible"] is False
    assert app.model_inputs(None)["visible"] is False
    remove_model("captioned", zoo=app_zoo)  # out of the other tests' listings


def test_importing_the_app_builds_the_page_without_serving_or_analytics(tmp_path):
    code = "import app, os; print(type(app.demo).__name__, app.demo.local_url, os.environ['GRADIO_ANALYTICS_ENABLED'])"
    done = run_python(code, env={"ZOO_DIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "True"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "Blocks None False"
    assert not (tmp_path / "cache").exists()  # nothing converted or loaded at import


def test_the_space_installs_what_the_project_declares():
    """A Space builds from requirements.txt and README.md's front matter alone: they must agree with
    pyproject.toml and start app.py with sign-in on."""
    import tomllib

    from huggingface_hub.repocard import metadata_load
    from packaging.requirements import Requirement

    def requirements(lines) -> dict[str, str]:
        parsed = [Requirement(line) for line in lines]
        return {requirement.name.lower().replace("_", "-"): str(requirement.specifier) for requirement in parsed}

    root = Path(__file__).resolve().parents[1]
    declared = requirements(tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"])
    lines = [line.strip() for line in (root / "requirements.txt").read_text().splitlines()]
    listed = requirements(line for line in lines if line and not line.startswith(("#", "-")))
    assert listed == declared
    assert "gradio[oauth]" in (root / "requirements.txt").read_text()  # the sign-in button needs it
    front = metadata_load(root / "README.md")
    assert (front["sdk"], front["app_file"], front["hf_oauth"]) == ("gradio", "app.py", True)
    assert front["sdk_version"].split(".")[0] == "6"



# --- auto's advice, image+text, and the comparison -------------------------------------------------------


def test_auto_is_the_default_and_its_advice_shows_before_training(client, monkeypatch):
    import app

    assert app.strategy_choices()[0] == "auto"
    example = client.predict(api_name="/example_dataset")
    started = time.monotonic()
    advice = value(client.predict(handle_file(example), "tf_efficientnet_lite0", 64, 0, 0, api_name="/advise"))
    print(f"advice on the example dataset: {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    chosen = re.search(r"\*\*Auto's advice: ([a-z-]+)\*\*", advice)
    assert chosen and chosen.group(1) in ("feature-extractor", "shallow", "fine-tune", "from-scratch"), advice
    assert "160 training images in 10 classes" in advice  # the size reason
    assert "feature shift" in advice and "quick-test accuracy" in advice and "estimated fit:" in advice
    # a budget too short for the preferred strategy is respected, and said
    tight = value(client.predict(handle_file(example), "tf_efficientnet_lite0", 64, 0, 1, api_name="/advise"))
    print(f"advice again (cached features): {time.monotonic() - started:.1f} s")
    assert "time budget 1 s" in tight, tight
    assert re.search(r"Auto's advice: (feature-extractor|shallow)\*\*", tight), tight  # nothing slow in 1 s
    monkeypatch.setenv("APP_MAX_TRAIN_SECONDS", "2")  # the deployment's cap applies to the advice too
    capped = value(client.predict(handle_file(example), "tf_efficientnet_lite0", 64, 0, 0, api_name="/advise"))
    assert "time budget 2 s" in capped, capped
    assert value(client.predict(None, "tf_efficientnet_lite0", 0, 0, 0, api_name="/advise")) == ""
    # a strategy picked by hand needs no advice: nothing is measured, the box is empty
    assert value(client.predict(handle_file(example), "tf_efficientnet_lite0", 64, 0, 0, "shallow",
                                api_name="/advise")) == ""
    with pytest.raises(AppError, match="Upload a .zip"):
        train(client, None, strategy="auto").result()


def test_auto_fit_uses_the_advice_shown_and_says_so(trained, client, colours_zip, app_zoo):
    shown = value(client.predict(handle_file(str(colours_zip)), FAST_FIT["backbone"], FAST_FIT["image_size"], 0, 0,
                                 api_name="/advise"))
    advised = re.search(r"\*\*Auto's advice: ([a-z-]+)\*\*", shown).group(1)
    *_, final = list(train(client, colours_zip, strategy="auto", name="colours-auto"))
    status, _, _, results = map(value, final[:4])
    assert "Saved as `colours-auto`" in status
    used = re.search(r"Strategy \*\*auto\*\* chose \*\*([a-z-]+)\*\*", results)
    assert used and used.group(1) == advised, (results, shown)
    assert json.loads((app_zoo / "colours-auto" / "transfer.json").read_text())["strategy"] == used.group(1)
    remove_model("colours-auto", zoo=app_zoo)


@pytest.fixture(scope="module")
def parcels_zip(xor_dir, tmp_path_factory) -> Path:
    """test_text's image+text task as a zip, plus one metadata row naming a file that is not there."""
    path = tmp_path_factory.mktemp("upload") / "parcels.zip"
    rows = (xor_dir / "metadata.jsonl").read_text().splitlines()
    rows.append(json.dumps({"file_name": "red/9999.png", "text": "this file does not exist"}))
    with zipfile.ZipFile(path, "w") as archive:
        for image in sorted(xor_dir.glob("*/*.png")):
            archive.write(image, f"parcels/{image.relative_to(xor_dir).as_posix()}")
        archive.writestr("parcels/metadata.jsonl", "\n".join(rows))
    return path


@pytest.fixture(scope="module")
def parcels_model(trained, client, parcels_zip, app_zoo):
    """One image+text fit through the app; (final outputs). Removed from the zoo at the end."""
    final = train(client, parcels_zip, name="parcels-app", image_size=32).result()
    yield final
    remove_model("parcels-app", zoo=app_zoo)


def test_image_text_upload_reports_its_texts_and_the_fit_its_ablation(client, parcels_zip, parcels_model):
    summary, *_ = client.predict(handle_file(str(parcels_zip)), api_name="/inspect_dataset")
    assert "**Text:** 360 of 360 images have a sentence" in summary
    assert "1 metadata row(s) reported as problems" in summary and "do not exist" in summary
    status, _, _, results = map(value, parcels_model[:4])
    assert "Saved as `parcels-app`" in status
    cells = re.search(r"\| image only \| text only \| image and text \|\n\|---\|---\|---\|\n"
                      r"\| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \|", results)
    assert cells, results
    image_only, text_only, both = (float(cell) for cell in cells.groups())
    assert both >= max(image_only, text_only) + 25  # the XOR task: neither input alone can do it
    card = client.predict("parcels-app", api_name="/model_card")
    assert "## Image and text" in card and "**minilm** text encoder" in card
    in_card = re.search(r"\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", card.split("## Image and text")[1])
    assert [float(cell) * 100 for cell in in_card.groups()] == pytest.approx([image_only, text_only, both], abs=0.051)


def test_predict_passes_the_text_and_answers_from_either_input(client, parcels_model, xor_dir):
    import app

    assert app.model_inputs("parcels-app")["visible"] is True
    from sklearn.datasets import load_digits

    path = next(xor_dir.glob("red/*.png"))
    digit = int(load_digits().target[int(path.stem)])  # files are named by their index in the digits set
    image = handle_file(str(path))
    by_air = client.predict("parcels-app", image, 2, "flown in on a plane", api_name="/predict")
    by_sea = client.predict("parcels-app", image, 2, "delivered by ferry", api_name="/predict")
    # the same digit, and the sentence decides the colour: blue when they agree (0 + sea, 1 + air)
    assert (by_air["label"], by_sea["label"]) == (("red", "blue") if digit == 0 else ("blue", "red"))
    text_only = client.predict("parcels-app", None, 2, "sent by airmail", api_name="/predict")
    image_only = client.predict("parcels-app", image, 2, "", api_name="/predict")
    for answer in (text_only, image_only):
        assert {c["label"] for c in answer["confidences"]} == {"red", "blue"}
        assert sum(c["confidence"] for c in answer["confidences"]) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(AppError, match="or type the text beside it"):
        client.predict("parcels-app", None, 2, "  ", api_name="/predict")
    with pytest.raises(AppError, match="takes images only"):
        client.predict("colours-fe", image, 2, "a sentence", api_name="/predict")
    # several images at once: the text box goes with every image, and decides their colour the same way
    files = [handle_file(str(p)) for p in sorted(xor_dir.glob("red/*.png"))[:2]]
    digits = [int(load_digits().target[int(p.stem)]) for p in sorted(xor_dir.glob("red/*.png"))[:2]]
    by_air, by_sea = (table_rows(client.predict("parcels-app", files, 2, sentence, api_name="/predict_batch"))
                      for sentence in ("flown in on a plane", "delivered by ferry"))
    assert [(a["label"], b["label"]) for a, b in zip(by_air, by_sea)] == [
        ("red", "blue") if d == 0 else ("blue", "red") for d in digits]
    with pytest.raises(AppError, match="takes images only"):
        client.predict("colours-fe", files, 2, "a sentence", api_name="/predict_batch")


def test_compare_runs_all_four_strategies_into_the_zoo(trained, client, colours_zip, app_zoo):
    started = time.monotonic()
    status, summary, table, chart = client.predict(handle_file(str(colours_zip)), "tf_efficientnet_lite0", 20, 64,
                                                   "cmp", api_name="/compare")
    seconds = time.monotonic() - started
    assert status == "**Done.**"
    rows = table_rows(table)
    assert table["headers"] == ["strategy", "accuracy", "macro-F1", "seconds", "trainable parameters", "model",
                                "note"]
    assert [row["strategy"] for row in rows] == ["feature-extractor", "shallow", "fine-tune", "from-scratch"]
    assert all(0 <= row["accuracy"] <= 1 and 0 <= row["macro-F1"] <= 1 and row["trainable parameters"] > 0
               for row in rows), rows
    assert sum("auto's choice" in row["note"] for row in rows) == 1
    assert sum("best" in row["note"].split(", ") for row in rows) == 1
    assert "**cmp**" in summary and "30 train / 6 val / 0 test" in summary and "20 s budget" in summary
    assert Path(chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed, *_ = client.predict("cmp", None, api_name="/search_zoo")
    assert sorted(row["name"] for row in table_rows(listed)) == sorted(row["model"] for row in rows)
    with pytest.raises(AppError, match="already exists"):
        client.predict(handle_file(str(colours_zip)), "tf_efficientnet_lite0", 20, 64, "cmp", api_name="/compare")
    with pytest.raises(AppError, match="Upload a .zip"):
        client.predict(None, "tf_efficientnet_lite0", 20, 64, "", api_name="/compare")
    with pytest.raises(AppError, match="less than minimum value 0"):  # gradio checks the number itself
        client.predict(handle_file(str(colours_zip)), "tf_efficientnet_lite0", -5, 64, "", api_name="/compare")
    for row in rows:
        remove_model(row["model"], zoo=app_zoo)
    print(f"comparison through the API: {seconds:.1f} s")


def test_cancel_stops_a_comparison_and_keeps_the_finished_runs(trained, client, colours_zip, app_zoo):
    job = client.submit(handle_file(str(colours_zip)), "tf_efficientnet_lite0", 0, 64, "cmp-stop",
                        api_name="/compare")  # no budget: from-scratch would run its full schedule
    deadline = time.monotonic() + 120
    while not any("**Running fine-tune" in update[0] for update in job.outputs()):
        assert time.monotonic() < deadline and not job.done(), job.outputs()[-1:] or job.status()
        time.sleep(0.2)
    # each finished run's row shows as soon as it ends, before the whole comparison does
    partial = [update[2] for update in job.outputs()
               if update[0].startswith("**Running") and isinstance(update[2], dict) and update[2].get("data")]
    shown = [row["strategy"] for row in table_rows(partial[-1])] if partial else []
    assert shown[:2] == ["feature-extractor", "shallow"], shown  # fine-tune may have finished too by now
    assert all(0 <= row["accuracy"] <= 1 and row["model"] for row in table_rows(partial[-1]))
    assert "Stopping" in client.predict(api_name="/cancel_compare")
    status, summary, *_ = job.result()
    assert status.startswith("**Cancelled.**") and summary == ""
    left = sorted(path.name for path in app_zoo.iterdir() if path.name.startswith("cmp-stop"))
    finished = ["cmp-stop-feature-extractor", "cmp-stop-shallow"]  # before fine-tune began
    assert left in (finished, sorted([*finished, "cmp-stop-fine-tune"])), left  # (a quick fine-tune may finish)
    assert all((app_zoo / name / "model.safetensors").is_file() for name in left)
    assert not any(path.name.startswith(".staging") for path in app_zoo.iterdir())
    assert client.predict(api_name="/cancel_compare") == "No comparison is running right now."
    for name in left:
        remove_model(name, zoo=app_zoo)
