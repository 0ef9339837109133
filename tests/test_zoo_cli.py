"""`python -m zoo` exactly as a user (or a script) runs it, on a zoo of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ASSETS, run_cli
from test_text import xor_dir  # noqa: F401  (a fixture: test_text's image+text task, reused)
from transfer.fit import fit
from zoo.predict import predict
from zoo.catalog import list_entries

IMAGES = [str(ASSETS / "digits" / "3" / "0003.png"), str(ASSETS / "photos" / "cat.jpg")]


@pytest.fixture(scope="module")
def cli_zoo(digits_small, zoo_path, tmp_path_factory) -> Path:
    """A zoo of its own with one real digits model (fitted in the session zoo, where the feature
    cache makes it quick) and the built-ins described (as any first listing would)."""
    zoo = tmp_path_factory.mktemp("cli-zoo")
    result = fit(digits_small, strategy="feature-extractor", image_size=32, zoo=zoo_path, name="cli-digits")
    shutil.copytree(result.path, zoo / "cli-digits")
    list_entries(zoo=zoo)
    return zoo


def zoo_cli(zoo: Path, *args: str):
    return run_cli("zoo", *args, "--zoo", str(zoo))


def test_list_show_and_predict_print_what_scripts_can_read(cli_zoo):
    listed = zoo_cli(cli_zoo, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"cli-digits", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"}
    row = rows["cli-digits"]
    assert row["strategy"] == "feature-extractor" and row["classes"] == [str(d) for d in range(10)]
    assert row["accuracy"] > 0.5 and row["num_train"] == 320 and row["size_bytes"] > 0 and not row["builtin"]
    assert rows["tf_efficientnet_lite0"]["builtin"] and rows["tf_efficientnet_lite0"]["num_classes"] == 1000

    table = run_cli("zoo", "--zoo", str(cli_zoo), "list", "--search", "digits")  # --zoo before the command too
    assert table.returncode == 0
    assert [line.split()[0] for line in table.stdout.strip().splitlines()] == ["NAME", "cli-digits"]

    shown = zoo_cli(cli_zoo, "show", "cli-digits", "--json")
    detail = json.loads(shown.stdout)
    assert detail["name"] == "cli-digits" and detail["transfer"]["spec"]["image_size"] == 32

    predicted = zoo_cli(cli_zoo, "predict", "cli-digits", *IMAGES, "--top-k", "3", "--json")
    assert predicted.returncode == 0, predicted.stderr
    lines = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    assert [line["image"] for line in lines] == IMAGES
    expected = predict("cli-digits", IMAGES, top_k=3, zoo=cli_zoo)
    for line, want in zip(lines, expected):
        assert [p["label"] for p in line["predictions"]] == [p["label"] for p in want]
        assert [p["score"] for p in line["predictions"]] == pytest.approx([p["score"] for p in want], abs=1e-5)


def test_rename_remove_export_import(cli_zoo, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(cli_zoo / "cli-digits", zoo / "mine")
    assert zoo_cli(zoo, "rename", "mine", "theirs").returncode == 0
    archive = tmp_path / "theirs.zip"
    exported = zoo_cli(zoo, "export", "theirs", "--output", str(archive))
    assert exported.returncode == 0 and exported.stdout.strip() == str(archive)
    imported = zoo_cli(zoo, "import", str(archive), "--name", "copy")
    assert imported.returncode == 0 and "copy" in imported.stdout
    asked = zoo_cli(zoo, "remove", "theirs")  # stdin is not a terminal: no silent deletion
    assert asked.returncode == 2 and "--yes" in asked.stderr and (zoo / "theirs").is_dir()
    assert zoo_cli(zoo, "remove", "theirs", "--yes").returncode == 0 and not (zoo / "theirs").exists()
    hidden = zoo_cli(zoo, "remove", "tf_efficientnet_lite1", "--yes")
    assert hidden.returncode == 0 and "restore" in hidden.stdout
    names = [row["name"] for row in json.loads(zoo_cli(zoo, "list", "--json").stdout)]
    assert names == ["copy", "tf_efficientnet_lite0", "tf_efficientnet_lite2"]
    assert zoo_cli(zoo, "restore", "tf_efficientnet_lite1").returncode == 0


@pytest.mark.parametrize("args, message", [
    (["show", "nope"], "No model named 'nope'"),
    (["predict", "cli-digits", "missing.jpg"], "No such image file: missing.jpg"),
    (["predict", "cli-digits", str(ASSETS / "README.md")], "not an image"),
    (["predict", "cli-digits", IMAGES[0], "--top-k", "0"], "--top-k must be 1 or more"),
    (["rename", "cli-digits", "../escape"], "Invalid model name"),
    (["import", str(ASSETS / "README.md")], "not a readable zip"),
    (["export", "cli-digits", "--output", str(ASSETS / "README.md")], "ending in .zip"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, cli_zoo):
    done = zoo_cli(cli_zoo, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert message in done.stderr
    assert (cli_zoo / "cli-digits" / "model.safetensors").is_file()  # nothing was harmed


def test_predict_reads_the_text_of_an_image_text_model(xor_dir, zoo_path, cli_zoo, tmp_path):
    """`--text` reaches the model: the same picture with another sentence gets the other class."""
    zoo = tmp_path / "zoo"
    result = fit(xor_dir, strategy="feature-extractor", image_size=32, zoo=zoo_path, name="cli-parcels",
                 text_encoder="hashing")  # the hashing encoder: no sentence model to load in the subprocess
    shutil.copytree(result.path, zoo / "cli-parcels")
    image = str(next(xor_dir.glob("red/*.png")))
    texts = ["flown in on a plane", "delivered by ferry"]  # the same picture twice, one text each
    done = zoo_cli(zoo, "predict", "cli-parcels", image, image, "--text", texts[0], "--text", texts[1],
                   "--top-k", "2", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    expected = predict("cli-parcels", [image, image], texts=texts, top_k=2, zoo=zoo)
    for line, want in zip(lines, expected):
        assert [p["label"] for p in line["predictions"]] == [p["label"] for p in want]
        assert [p["score"] for p in line["predictions"]] == pytest.approx([p["score"] for p in want], abs=1e-5)
    assert lines[0]["predictions"][0]["label"] != lines[1]["predictions"][0]["label"], lines
    refused = zoo_cli(cli_zoo, "predict", "cli-digits", IMAGES[0], "--text", "hello")  # an image-only model
    assert refused.returncode == 2 and "takes images only" in refused.stderr and "Traceback" not in refused.stderr
