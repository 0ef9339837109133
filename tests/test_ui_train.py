"""The app's Fine-tune tab through its API: what an upload holds, bad uploads and settings, auto's
advice, a fit end to end with live updates, cancel, and an image+text fit's ablation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app_helpers import COLOURS, FAST_FIT, colour_zip, train, value, wait_for_update
from zoo.catalog import remove_model


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


def test_predictions_answer_while_training_and_cancel_saves_nothing(trained, client, url, colours_zip, app_zoo,
                                                                     held_out):
    job = train(client, colours_zip, strategy="from-scratch", name="colours-cancelled", epochs=500)
    wait_for_update(job, lambda update: " · epoch " in update[0])
    # the live curves: points arrive while the fit is still running
    live_loss = value(wait_for_update(job, lambda update: value(update[2]))[2])
    assert live_loss["data"] and {row[2] for row in live_loss["data"]} <= {"training", "validation"}
    # another user predicts while the fit runs: answered at once, not queued behind it
    other = Client(url, verbose=False)
    answer = other.predict("colours-fe", handle_file(str(held_out["blue"])), 1, "", api_name="/predict")
    assert answer["label"] == "blue" and not job.done()
    # cancel (same session: the run lives in this user's state)
    assert "Stopping" in client.predict(api_name="/cancel")
    status, accuracy, *_ = job.result()
    assert status == "**Cancelled.** Nothing was saved."
    assert max(row[0] for row in accuracy["data"]) < 500  # from-scratch never stops early by itself
    assert not (app_zoo / "colours-cancelled").exists()
    assert not any(path.name.startswith(".staging") for path in app_zoo.iterdir())
    assert client.predict(api_name="/cancel") == "Nothing is training right now."


def test_auto_is_the_default_and_its_advice_shows_before_training(client, monkeypatch):
    from ui.settings import strategy_choices

    assert strategy_choices()[0] == "auto"
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


def test_a_target_domain_zip_and_the_balance_choice_reach_the_fit(client, colours_zip, app_zoo):
    """The optional target-domain upload and the balance radio travel with the fit: pictures that
    look like the training ones are measured and left alone, and both land in transfer.json."""
    *_, final = list(train(client, colours_zip, name="colours-target", target_zip=colours_zip, balance="none"))
    status, _, _, results = map(value, final[:4])
    assert "Saved as `colours-target`" in status
    assert "target-domain images look like the training images" in results
    info = json.loads((app_zoo / "colours-target" / "transfer.json").read_text())
    assert info["adaptation"]["method"] is None and info["adaptation"]["images"] > 0
    assert info["balance"]["requested"] == "none"
    remove_model("colours-target", zoo=app_zoo)
