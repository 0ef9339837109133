"""The local zoo as a user meets it: list, search, show, predict, rename, remove, export/import,
damaged folders, crashes and races, the built-in ImageNet classifiers, the format-1 fixture, and
a zoo model as the backbone of a further fine-tune.

Models: one feature-extractor fit on 400 digits at 32 px (real bundled weights, a few seconds),
copied into fresh zoos where a test needs the zoo to itself; tiny random `test_efficientnet`
models where only the plumbing matters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import safetensors.torch
import torch

from conftest import ASSETS, ROOT, run_python
from transfer.fit import fit
from zoo import ZooError
from zoo.builtin_models import restore_builtin
from zoo.predict import ModelCache, predict, probabilities
from zoo.archives import export_model, import_model
from zoo.catalog import list_entries, load_model, read_entry, remove_model, rename_model
from zoo.store import save_model, validate_name

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DIGIT_IMAGES = sorted(str(p) for p in (ASSETS / "digits").glob("*/*.png"))[::25]  # 8 images, classes 0-9


@pytest.fixture(scope="module")
def digits_model(digits_small, zoo_path):
    """A real model in the session zoo: feature-extractor on 400 digits at 32 px."""
    return fit(digits_small, strategy="feature-extractor", image_size=32, zoo=zoo_path, name="zoo-digits")


@pytest.fixture(scope="module")
def converted_weights(zoo_path) -> Path:
    """The bundled weights converted to safetensors once; fresh zoos get a copy (else each converts)."""
    from zoo.catalog import resolve_weights

    return resolve_weights("tf_efficientnet_lite0", zoo=zoo_path).file.parent


def seeded_zoo(path: Path, converted_weights: Path) -> Path:
    shutil.copytree(converted_weights, path / "cache" / "weights")
    return path


@pytest.fixture
def own_zoo(tmp_path, digits_model, converted_weights) -> Path:
    """A fresh zoo holding a copy of `zoo-digits`."""
    zoo = seeded_zoo(tmp_path / "zoo", converted_weights)
    shutil.copytree(digits_model.path, zoo / "zoo-digits")
    return zoo


def tiny_model(labels=("a", "b")):
    """A random tiny timm network and its spec (plumbing tests)."""
    from zoo.model import ModelSpec, build_model

    spec = ModelSpec(architecture="test_efficientnet", label_names=list(labels), image_size=32)
    return build_model(spec).eval(), spec


# --- listing, metadata, reload ---------------------------------------------------------------------


def test_saved_model_lists_with_correct_metadata_and_reloads_identically(digits_model, zoo_path):
    [row] = [entry.summary() for entry in list_entries(zoo=zoo_path) if entry.name == "zoo-digits"]
    assert row["backbone"] == "tf_efficientnet_lite0" and row["strategy"] == "feature-extractor"
    assert row["classes"] == [str(d) for d in range(10)] and row["num_classes"] == 10
    assert row["accuracy"] == pytest.approx(digits_model.metrics["accuracy"])
    assert row["macro_f1"] == pytest.approx(digits_model.metrics["macro_f1"])
    assert row["accuracy"] > 0.5  # chance is 0.1
    assert row["num_train"] == digits_model.num_train == 320
    files = [digits_model.path / name for name in ("config.json", "model.safetensors", "README.md", "transfer.json")]
    assert row["size_bytes"] == sum(file.stat().st_size for file in files)
    created = datetime.fromisoformat(row["created"])
    assert timedelta(0) <= datetime.now(timezone.utc) - created < timedelta(hours=1)
    assert not row["damaged"] and not row["builtin"] and not row["takes_text"]

    model, entry = load_model("zoo-digits", zoo=zoo_path)
    before = probabilities(_loaded(digits_model.model.eval(), entry), DIGIT_IMAGES)
    after = probabilities(_loaded(model, entry), DIGIT_IMAGES)
    assert torch.allclose(before, after, atol=1e-5)  # same weights; kernels may differ in the last bits
    top = predict("zoo-digits", DIGIT_IMAGES, top_k=3, zoo=zoo_path)
    # predict folds BatchNorm into the convolutions: the same function, rounded differently
    assert [row[0]["score"] for row in top] == pytest.approx(before.max(1).values.tolist(), abs=1e-5)
    assert all(len(row) == 3 and row[0]["score"] >= row[1]["score"] >= row[2]["score"] for row in top)
    # one image (not a list) is one prediction; any mode or size is accepted
    [single] = predict("zoo-digits", ASSETS / "photos" / "cat.jpg", top_k=2, zoo=zoo_path)
    assert len(single) == 2 and {row["label"] for row in single} <= set(entry.spec.label_names)


def test_listing_the_zoo_does_not_load_pytorch(digits_model, zoo_path):
    """`python -m zoo list` answers at once: every spec is validated without importing torch (the
    first listing of a new zoo writes the built-ins' descriptions, which reads timm's ImageNet names once)."""
    list_entries(zoo=zoo_path)
    code = ("import sys\nfrom zoo.catalog import list_entries\n"
            "entries = list_entries(zoo=sys.argv[1])\n"
            "print(sorted(e.name for e in entries if not e.damaged), 'torch' in sys.modules)\n")
    done = run_python(code, str(zoo_path))
    assert done.returncode == 0, done.stderr
    names, torch_loaded = done.stdout.strip().rsplit(" ", 1)
    assert "'zoo-digits'" in names and "'tf_efficientnet_lite0'" in names
    assert torch_loaded == "False"


def test_zoo_folder_loads_in_plain_timm_with_labels_and_the_same_probabilities(digits_model):
    import timm
    from PIL import Image

    model = timm.create_model(f"local-dir:{digits_model.path}", pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == [str(d) for d in range(10)]
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        plain = torch.cat([model(transform(Image.open(path).convert("RGB"))[None]).softmax(1) for path in DIGIT_IMAGES])
    ours = probabilities(_loaded(*load_model(digits_model.name, zoo=digits_model.path.parent)), DIGIT_IMAGES)
    assert torch.allclose(plain, ours, atol=1e-4), (plain - ours).abs().max()


def _loaded(model, entry):
    from zoo.predict import LoadedModel

    return LoadedModel(entry.name, model, entry.spec, entry)


def test_model_card_speaks_the_hubs_metadata_and_a_persons_language(digits_model):
    from huggingface_hub import ModelCard

    text = (digits_model.path / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-classification"
    assert {"transfer-zoo", "strategy-feature-extractor"} <= set(card.data.tags)
    assert card.data.metrics == ["accuracy", "f1"]  # names here, values in model-index
    values = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert values == {"accuracy": round(digits_model.metrics["accuracy"], 4),
                      "f1": round(digits_model.metrics["macro_f1"], 4)}
    assert card.data.eval_results[0].dataset_split == "validation"
    body = card.text
    assert "An image classifier for 10 classes" in body and "feature-extractor" in body
    assert "| 7 | 32 | 8 |" in body  # class counts per split
    matrix = digits_model.metrics["confusion_matrix"]
    assert "| **3** | " + " | ".join(map(str, matrix[3])) + " |" in body
    assert "python -m zoo predict zoo-digits" in body and 'timm.create_model("local-dir:' in body


def test_search_show_rename_remove(own_zoo):
    names = lambda query: [entry.name for entry in list_entries(zoo=own_zoo, query=query)]  # noqa: E731
    assert names("digits feature") == ["zoo-digits"]
    assert "zoo-digits" in names("7")  # a class name
    assert names("no-such-thing") == []
    assert names("tabby") == ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]

    path = rename_model("zoo-digits", "renamed-digits", zoo=own_zoo)
    assert (path / "README.md").read_text().count("# renamed-digits") == 1  # the card follows
    assert predict("renamed-digits", DIGIT_IMAGES[:1], zoo=own_zoo)
    with pytest.raises(ZooError, match="No model named 'zoo-digits'"):
        read_entry("zoo-digits", zoo=own_zoo)
    shutil.copytree(path, own_zoo / "second")
    with pytest.raises(ZooError, match="already exists"):
        rename_model("renamed-digits", "second", zoo=own_zoo)
    remove_model("renamed-digits", zoo=own_zoo)
    assert "renamed-digits" not in names(None) and not (own_zoo / "renamed-digits").exists()
    assert not [p for p in own_zoo.iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 81, "name.", "a b", "über"])
def test_names_with_path_tricks_are_refused(name, tmp_path):
    with pytest.raises(ZooError, match="Invalid model name"):
        validate_name(name)
    model, spec = tiny_model()
    with pytest.raises(ZooError, match="Invalid model name"):
        save_model(model, spec, {}, name=name, zoo=tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.name != "cache"]


# --- damage, crashes, races, overwrite -----------------------------------------------------------------


def test_damaged_folders_are_listed_with_their_reason(own_zoo):
    good = own_zoo / "zoo-digits"
    damage = {
        "no-weights": lambda p: (p / "model.safetensors").unlink(),
        "bad-json": lambda p: (p / "transfer.json").write_text("{not json"),
        "truncated": lambda p: _truncate(p / "model.safetensors"),
        "future": lambda p: _edit_info(p, format_version=99),
        "no-spec": lambda p: _edit_info(p, spec=None),
    }
    for name, hurt in damage.items():
        shutil.copytree(good, own_zoo / name)
        hurt(own_zoo / name)
    (own_zoo / "empty").mkdir()
    shutil.copytree(good, own_zoo / ".staging-half-written-1234")  # a crashed save: never listed
    (own_zoo / "notes.txt").write_text("a stray file")

    rows = {entry.name: entry.damaged for entry in list_entries(zoo=own_zoo)}
    assert rows["zoo-digits"] is None
    assert "missing model.safetensors" in rows["no-weights"]
    assert "JSON" in rows["bad-json"]
    assert "model.safetensors is damaged" in rows["truncated"]
    assert "format_version 99" in rows["future"] and "update" in rows["future"]
    assert "no model spec" in rows["no-spec"]
    assert "missing" in rows["empty"]
    assert not any(name.startswith(".") or name == "notes.txt" for name in rows)
    for name in damage:
        with pytest.raises(ZooError, match="damaged"):
            predict(name, DIGIT_IMAGES[:1], zoo=own_zoo)
    remove_model("truncated", zoo=own_zoo)  # a damaged model can still be deleted
    assert "truncated" not in {entry.name for entry in list_entries(zoo=own_zoo)}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_info(folder: Path, **changes) -> None:
    info = json.loads((folder / "transfer.json").read_text())
    info.update(changes)
    (folder / "transfer.json").write_text(json.dumps(info))


SAVE_SCRIPT = """
import sys
from zoo import ZooError
from zoo.model import ModelSpec, build_model
from zoo.store import save_model
spec = ModelSpec(architecture="test_efficientnet", label_names=["a", "b"], image_size=32)
model = build_model(spec)
try:
    save_model(model, spec, {"strategy": "from-scratch", "writer": sys.argv[2]}, name="contested",
               zoo=sys.argv[1], overwrite=sys.argv[3] == "1")
except ZooError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
"""


def _start_save(zoo: Path, writer: str, marker: Path, overwrite: bool = False) -> subprocess.Popen:
    env = {**os.environ, "ZOO_TEST_PAUSE_BEFORE_PUBLISH": str(marker), "ZOO_TEST_PAUSE_SECONDS": "120"}
    return subprocess.Popen([sys.executable, "-c", SAVE_SCRIPT, str(zoo), writer, "1" if overwrite else "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(*markers: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(marker.exists() for marker in markers):
        assert time.monotonic() < deadline, "the saves never reached the publish step"
        time.sleep(0.05)


def test_racing_saves_one_wins_the_other_is_refused(tmp_path):
    zoo = tmp_path / "zoo"
    markers = [tmp_path / "a.paused", tmp_path / "b.paused"]
    processes = [_start_save(zoo, writer, marker) for writer, marker in zip("ab", markers)]
    _wait_for(*markers)  # both have written all their files and checked that the name is free
    for marker in markers:
        marker.unlink()  # release both at once
    outcomes = [process.communicate(timeout=120) + (process.returncode,) for process in processes]
    codes = sorted(code for _, _, code in outcomes)
    assert codes == [0, 2], outcomes
    loser = next(err for _, err, code in outcomes if code == 2)
    assert "saved by someone else just now" in loser and "Traceback" not in loser
    winner = "ab"[[code for _, _, code in outcomes].index(0)]
    entry = read_entry("contested", zoo=zoo)
    assert entry.info["writer"] == winner
    load_model("contested", zoo=zoo)  # complete and loadable
    assert [p.name for p in zoo.iterdir() if p.name != "cache"] == ["contested"]  # no staging left


def test_a_save_killed_before_publishing_leaves_the_old_model(tmp_path):
    zoo = tmp_path / "zoo"
    model, spec = tiny_model()
    save_model(model, spec, {"writer": "first"}, name="contested", zoo=zoo)
    before = (zoo / "contested" / "model.safetensors").read_bytes()
    marker = tmp_path / "paused"
    process = _start_save(zoo, "second", marker, overwrite=True)
    _wait_for(marker)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    entry = read_entry("contested", zoo=zoo)
    assert entry.info["writer"] == "first" and (entry.path / "model.safetensors").read_bytes() == before
    assert [e.name for e in list_entries(zoo=zoo) if not e.builtin] == ["contested"]  # the half save is hidden


def test_overwrite_is_refused_unless_asked_and_the_cache_never_serves_stale(tmp_path):
    zoo = tmp_path / "zoo"
    model, spec = tiny_model()
    save_model(model, spec, {"writer": "first"}, name="m", zoo=zoo)
    cache = ModelCache()
    first = predict("m", DIGIT_IMAGES[:2], zoo=zoo, cache=cache)
    assert predict("m", DIGIT_IMAGES[:2], zoo=zoo, cache=cache) == first  # served from the cache
    other, _ = tiny_model()
    with torch.no_grad():
        other.get_classifier().bias.copy_(torch.tensor([5.0, -5.0]))  # now it says "a", surely
    with pytest.raises(ZooError, match="already exists"):
        save_model(other, spec, {"writer": "second"}, name="m", zoo=zoo)
    save_model(other, spec, {"writer": "second"}, name="m", zoo=zoo, overwrite=True)
    second = predict("m", DIGIT_IMAGES[:2], zoo=zoo, cache=cache)
    assert second != first and all(row[0]["label"] == "a" and row[0]["score"] > 0.99 for row in second)
    remove_model("m", zoo=zoo)
    with pytest.raises(ZooError, match="No model named 'm'"):
        predict("m", DIGIT_IMAGES[:1], zoo=zoo, cache=cache)


# --- the format-1 fixture ------------------------------------------------------------------------------


def test_format_1_fixture_still_loads_and_predicts_the_same(tmp_path):
    expected = json.loads((FIXTURES / "zoo-format1" / "expected.json").read_text())
    zoo = tmp_path / "zoo"
    shutil.copytree(FIXTURES / "zoo-format1" / expected["model"], zoo / expected["model"])
    [entry] = [entry for entry in list_entries(zoo=zoo) if not entry.builtin]
    assert entry.damaged is None and entry.info["format_version"] == 1 and entry.spec.cut_stage == 1
    cache = ModelCache()
    probs = probabilities(cache.get(entry.name, zoo=zoo), [ROOT / image for image in expected["images"]])
    assert torch.allclose(probs, torch.tensor(expected["probabilities"]), atol=1e-4)
    # and it is a real digit classifier, not just bytes that parse
    digits = sorted((ASSETS / "digits").glob("*/*.png"))
    top = predict(entry.name, digits, top_k=1, zoo=zoo, cache=cache)
    accuracy = sum(row[0]["label"] == path.parent.name for row, path in zip(top, digits)) / len(digits)
    assert accuracy > 0.7, accuracy


# --- export and import ------------------------------------------------------------------------------------


def test_export_then_import_round_trip(own_zoo, tmp_path):
    archive = export_model("zoo-digits", zoo=own_zoo, output=tmp_path / "digits.zip")
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == sorted(f"zoo-digits/{f}" for f in
                                                   ("config.json", "model.safetensors", "README.md", "transfer.json"))
    with pytest.raises(ZooError, match="already exists"):
        export_model("zoo-digits", zoo=own_zoo, output=archive)  # never replaces a file
    other = tmp_path / "other-zoo"
    assert import_model(archive, zoo=other) == "zoo-digits"
    assert import_model(archive, zoo=other, name="digits-again") == "digits-again"
    assert "# digits-again" in (other / "digits-again" / "README.md").read_text()
    with pytest.raises(ZooError, match="already exists"):
        import_model(archive, zoo=other)
    original = predict("zoo-digits", DIGIT_IMAGES, zoo=own_zoo)
    assert predict("zoo-digits", DIGIT_IMAGES, zoo=other) == original
    assert predict("digits-again", DIGIT_IMAGES, zoo=other) == original
    # a built-in exports as a real model folder that plain timm loads
    builtin = export_model("tf_efficientnet_lite0", zoo=own_zoo, output=tmp_path / "lite0.zip")
    assert import_model(builtin, zoo=other, name="my-lite0") == "my-lite0"
    assert read_entry("my-lite0", zoo=other).spec.num_classes == 1000


def _zip(path: Path, files: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("case, reason", [
    ("extra-file", "unexpected file"),
    ("pickle", "unexpected file 'm/pytorch_model.bin'"),
    ("traversal", "unsafe path"),
    ("link", "is a link"),
    ("two-folders", "several folders"),
    ("no-transfer-json", "missing transfer.json"),
    ("wrong-shape", "wrong shape"),
    ("truncated", "not a complete safetensors file"),
    ("not-a-zip", "not a readable zip"),
])
def test_import_refuses_anything_but_a_clean_model(case, reason, digits_model, tmp_path):
    files = {f"m/{name}": (digits_model.path / name).read_bytes()
             for name in ("config.json", "model.safetensors", "README.md", "transfer.json")}
    links: tuple[str, ...] = ()
    if case == "extra-file":
        files["m/run.py"] = b"import os"
    elif case == "pickle":
        files["m/pytorch_model.bin"] = b"\x80\x04pickle"
    elif case == "traversal":
        files["../m/transfer.json"] = files.pop("m/transfer.json")
    elif case == "link":
        files.pop("m/README.md")
        links = ("m/README.md",)
    elif case == "two-folders":
        files["other/README.md"] = files.pop("m/README.md")
    elif case == "no-transfer-json":
        files.pop("m/transfer.json")
    elif case == "wrong-shape":
        state = safetensors.torch.load_file(str(digits_model.path / "model.safetensors"))
        state["classifier.weight"] = torch.zeros(10, 7)
        files["m/model.safetensors"] = safetensors.torch.save(state)
    elif case == "truncated":
        files["m/model.safetensors"] = files["m/model.safetensors"][:-100]
    archive = tmp_path / "model.zip"
    if case == "not-a-zip":
        archive.write_bytes(b"PK but not really")
    else:
        _zip(archive, files, links)
    zoo = tmp_path / "zoo"
    with pytest.raises(ZooError, match=reason):
        import_model(archive, zoo=zoo)
    assert not zoo.exists() or not [p for p in zoo.iterdir() if p.name != "cache"]  # nothing landed


# --- built-in ImageNet classifiers -----------------------------------------------------------------------


def test_fresh_zoo_offers_the_builtin_imagenet_classifiers(tmp_path, converted_weights):
    zoo = seeded_zoo(tmp_path / "fresh", converted_weights)
    rows = [entry.summary() for entry in list_entries(zoo=zoo)]
    assert [row["name"] for row in rows] == ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
    assert all(row["builtin"] and row["num_classes"] == 1000 and not row["damaged"] for row in rows)
    assert "tabby, tabby cat" in rows[0]["classes"] and len(set(rows[0]["classes"])) == 1000
    photos = [ASSETS / "photos" / "cat.jpg", ASSETS / "photos" / "coffee.jpg"]
    cat, coffee = predict("tf_efficientnet_lite0", photos, top_k=3, zoo=zoo)
    assert any("cat" in row["label"] for row in cat), cat
    assert any("espresso" in row["label"] for row in coffee), coffee
    assert not [p for p in zoo.iterdir() if p.name not in ("cache",)]  # nothing copied into the zoo itself

    # remove hides, restore brings back; the names stay reserved
    remove_model("tf_efficientnet_lite2", zoo=zoo)
    assert "tf_efficientnet_lite2" not in {entry.name for entry in list_entries(zoo=zoo)}
    with pytest.raises(ZooError, match="restore"):
        predict("tf_efficientnet_lite2", photos, zoo=zoo)
    restore_builtin("tf_efficientnet_lite2", zoo=zoo)
    assert "tf_efficientnet_lite2" in {entry.name for entry in list_entries(zoo=zoo)}
    model, spec = tiny_model()
    with pytest.raises(ZooError, match="built-in"):
        save_model(model, spec, {}, name="tf_efficientnet_lite1", zoo=zoo)

    # rename makes a real copy under the new name and hides the built-in
    rename_model("tf_efficientnet_lite0", "imagenet-lite0", zoo=zoo)
    names = {entry.name: entry for entry in list_entries(zoo=zoo)}
    assert "tf_efficientnet_lite0" not in names and not names["imagenet-lite0"].builtin
    assert predict("imagenet-lite0", photos, top_k=3, zoo=zoo) == [cat, coffee]


# --- a zoo model as a backbone ---------------------------------------------------------------------------


def test_zoo_model_is_the_backbone_of_a_further_fit(digits_small, tmp_path, converted_weights):
    """A shallow model (the bundled backbone cut at the stage validation chose, plus a digits head)
    serves as `zoo:NAME`: the new fit keeps its cut and its backbone tensors, and trains a new head."""
    zoo = seeded_zoo(tmp_path / "zoo", converted_weights)
    first = fit(digits_small, strategy="shallow", image_size=32, zoo=zoo, name="cut")
    # another split (seed): head training is deterministic, so the same split would give the same head
    second = fit(digits_small, backbone="zoo:cut", strategy="feature-extractor", zoo=zoo, name="on-cut", seed=1)
    cut = first.details["cut_stage"]
    assert read_entry("on-cut", zoo=zoo).spec.cut_stage == cut  # only zoo:cut could have given that
    assert second.total_parameters == first.total_parameters
    source = safetensors.torch.load_file(str(first.path / "model.safetensors"))
    reused = safetensors.torch.load_file(str(second.path / "model.safetensors"))
    assert source.keys() == reused.keys()
    assert all(torch.equal(reused[key], source[key]) for key in source if not key.startswith("classifier."))
    assert not torch.equal(reused["classifier.weight"], source["classifier.weight"])  # a new head was trained
    info = read_entry("on-cut", zoo=zoo).info
    assert info["backbone"]["source"] == "zoo" and info["backbone"]["name"] == "zoo:cut"
    assert second.image_size == 32  # the zoo model's input settings carry over
    assert second.metrics["accuracy"] > 0.5  # chance is 0.1
    with pytest.raises(ZooError, match="No model named 'missing'"):
        fit(digits_small, backbone="zoo:missing", zoo=zoo, name="never")
