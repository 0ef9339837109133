"""The app's Zoo tab through its API (`gradio_client`), as a script or the page would use it: the
table and search, a model's card, rename and delete, export and import. The app runs in this
process over its own empty zoo (conftest's `client` and `trained` fixtures)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from app_helpers import table_rows, user_models, value


def test_an_empty_zoo_lists_nothing(client, app_zoo):
    if any(path.name != "cache" for path in app_zoo.iterdir()):
        pytest.skip("the zoo is not empty any more (tests ran out of order)")
    table, *_ = client.predict("", None, api_name="/list_zoo")
    assert table["headers"] == ["name", "backbone", "strategy", "classes", "accuracy", "created"]
    assert user_models(table) == []


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
