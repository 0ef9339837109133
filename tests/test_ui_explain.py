"""The app's new views of a model: the Predict tab's Grad-CAM heatmap, the Zoo tab's ONNX download,
and the Fine-tune tab's error drill-down (confusion-matrix cells, the most confidently wrong)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import ASSETS
from transfer.fit import fit


@pytest.fixture(scope="module")
def digits_upload(url):
    """The example dataset's zip, as the app serves it (the app's zoo is ZOO_DIR while it runs)."""
    from ui.uploads import example_dataset_zip

    return example_dataset_zip()


@pytest.fixture(scope="module")
def digits_fit(digits_upload, app_zoo):
    """A fit of the uploaded zip as the Fine-tune tab runs it (the same Dataset), quick and imperfect."""
    from ui.config import app_config
    from ui.uploads import open_upload

    return fit(open_upload(digits_upload, app_config()), strategy="feature-extractor", image_size=32, zoo=app_zoo,
               name="digits-drill")


def test_predict_tab_shows_a_heatmap_for_the_top_class_or_a_picked_one(client):
    coffee = handle_file(str(ASSETS / "photos" / "coffee.jpg"))
    overlay, note = client.predict("tf_efficientnet_lite0", coffee, "the top class", "", api_name="/explain")
    assert Image.open(overlay).size == (224, 224)
    assert "**espresso**" in note and "Grad-CAM on `blocks.6`" in note and "own answer" not in note
    overlay, note = client.predict("tf_efficientnet_lite0", coffee, "cup", "", api_name="/explain")
    assert "**cup**" in note and "The model's own answer is **espresso**" in note
    with pytest.raises(AppError, match="Upload an image"):
        client.predict("tf_efficientnet_lite0", None, "the top class", "", api_name="/explain")


def test_zoo_tab_offers_a_checked_onnx_download(client, digits_fit):
    import onnxruntime

    from zoo.onnx_export import onnx_feeds
    from zoo.predict import predict

    path = client.predict("digits-drill", api_name="/export_onnx")
    assert path.endswith("digits-drill.onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = [ASSETS / "digits" / digit / sorted(p.name for p in (ASSETS / "digits" / digit).iterdir())[0]
              for digit in ("3", "7")]
    from zoo.catalog import read_entry

    _, probabilities = session.run(None, onnx_feeds(read_entry("digits-drill").spec, images))
    expected = predict("digits-drill", images, top_k=10)
    for row, answer in zip(probabilities, expected):
        assert digits_fit.classes[int(np.argmax(row))] == answer[0]["label"]
        assert float(np.max(row)) == pytest.approx(answer[0]["score"], abs=1e-4)


def test_drill_down_shows_each_cells_images_and_the_most_confidently_wrong(digits_fit, digits_upload):
    from ui.drilldown import MOST_WRONG, after_fit, cell_images, show_cell

    matrix, classes = digits_fit.metrics["confusion_matrix"], digits_fit.classes
    errors = digits_fit.errors
    assert errors["count"] > 0, "the test needs a model that makes mistakes"
    state, box, wrong, hint, cell = after_fit("digits-drill", digits_upload)
    assert state == {"name": "digits-drill", "upload": digits_upload} and box["visible"] is True
    assert wrong["visible"] is True and len(wrong["value"]) == min(MOST_WRONG, errors["count"])
    first = errors["files"][0]  # the most confidently wrong comes first, captioned with what happened
    caption = f"{first['file']}: {first['true']} taken for {first['predicted']} ({first['score']:.0%})"
    assert wrong["value"][0][1] == caption
    assert f"{errors['count']} of 40 validation images were misclassified" in hint

    for true, row in enumerate(matrix):
        for predicted, count in enumerate(row):
            if true != predicted and not count:
                continue
            title, thumbs = cell_images("digits-drill", digits_upload, classes[true], classes[predicted])
            assert len(thumbs) == count and f"**{count}** validation image(s) of **{classes[true]}**" in title
            if true != predicted:  # each shown with the score the model gave its wrong answer
                assert all(caption.startswith(f"{true}/") and caption.endswith(f"% {classes[predicted]})")
                           for _, caption in thumbs)
    # a click on the table: row = true class, column = predicted (after the class-name column)
    true, predicted = next((t, p) for t, row in enumerate(matrix) for p, count in enumerate(row) if t != p and count)
    click = gr.SelectData(None, {"index": [true, predicted + 1], "value": matrix[true][predicted], "selected": True})
    assert show_cell(state, click) == cell_images("digits-drill", digits_upload, classes[true], classes[predicted])
    names_column = gr.SelectData(None, {"index": [true, 0], "value": classes[true], "selected": True})
    assert "Click a cell" in show_cell(state, names_column)[0]
