"""The app's Predict tab through its API: one image, several at once, clear messages, and image+text
models (the text box, and answers from the image, the text, or both)."""

from __future__ import annotations

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from app_helpers import COLOURS, colour_image, table_rows
from zoo.catalog import remove_model


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


def test_text_box_only_for_models_that_take_text(trained, app_zoo, tmp_path):
    from transfer.fit import fit
    from ui.predict_tab import model_inputs

    data = tmp_path / "captioned"
    rows = []
    for colour in ("red", "blue"):
        (data / colour).mkdir(parents=True)
        for index in range(5):
            colour_image(colour, seed=index).save(data / colour / f"{index}.png")
            rows.append(f'{{"file_name": "{colour}/{index}.png", "text": "a {colour} box"}}')
    (data / "metadata.jsonl").write_text("\n".join(rows))
    fit(data, image_size=32, zoo=app_zoo, name="captioned", text_encoder="hashing")
    assert model_inputs("captioned")["visible"] is True
    assert model_inputs("colours-fe")["visible"] is False
    assert model_inputs(None)["visible"] is False
    remove_model("captioned", zoo=app_zoo)  # out of the other tests' listings
