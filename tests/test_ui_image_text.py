"""The app with images and text: an upload with a metadata file (its texts reported), a fit that
reads them (its ablation shown and in the card), and predictions from the image, the text or both."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from app_helpers import table_rows, train, value
from test_text import xor_dir  # noqa: F401, F811  (a fixture: the image+text task, reused)
from zoo.catalog import remove_model


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
    from ui.predict_tab import model_inputs

    assert model_inputs("parcels-app")["visible"] is True
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
