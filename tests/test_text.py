"""Image + text: captions from metadata files, fusion, modality dropout, ablation, reload.

The fusion task: real digit images (0 or 1) and a sentence saying how a parcel travelled (by sea or
by air, in varied words); the class is "blue" when digit and transport agree (0+sea, 1+air) and
"red" otherwise. Each input alone is independent of the class, so either alone caps at 0.5.
"""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_python
from transfer import DataError
from transfer.data import load_dataset
from transfer.fit import fit
from zoo.predict import ModelCache, predict, probabilities

SEA = ["shipped across the ocean on a cargo boat", "the parcel went by sea", "it travelled in a container ship",
       "sent by boat over the water", "delivered by ferry", "carried on a freighter across the sea"]
AIR = ["flown in on a plane", "the parcel went by air", "it travelled in the hold of a jet",
       "sent by airmail", "delivered by aeroplane", "carried on a cargo flight through the sky"]


@pytest.fixture(scope="module")
def xor_dir(tmp_path_factory):
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("data") / "parcels"
    rng = random.Random(0)
    digits = load_digits()
    rows = []
    for index, (pixels, digit) in enumerate(zip(digits.images, digits.target)):
        if digit > 1:
            continue
        by_air = rng.randint(0, 1)
        label = "red" if digit ^ by_air else "blue"
        (root / label).mkdir(parents=True, exist_ok=True)
        name = f"{label}/{index:04d}.png"
        Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), "L").save(root / name)
        rows.append({"file_name": name, "text": rng.choice(AIR if by_air else SEA)})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return root


@pytest.fixture(scope="module")
def fused(xor_dir, zoo_path):
    """The default: MiniLM text features, frozen image features, fusion head on the caches."""
    return fit(xor_dir, strategy="feature-extractor", image_size=32, zoo=zoo_path, name="parcels-minilm")


def test_captions_are_read_and_mismatches_reported(tmp_path):
    root = tmp_path / "d"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0) if label == "cat" else (0, i * 40, 0)).save(root / label / f"{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "text"])
        writer.writerows([["cat/0.png", "a sleepy cat"], ["cat/1.png", "a cat on a mat"], ["dog/0.png", "a good dog"],
                          ["dog/1.png", ""], ["dog/9.png", "this file does not exist"],
                          ["dog/notes.txt", "text for a file that is not an image"]])
    data = load_dataset(root)
    texts = {s.relpath: s.text for s in data.train + data.val}
    assert texts["cat/0.png"] == "a sleepy cat" and texts["dog/1.png"] is None
    report = data.text_report
    assert report["images_with_text"] == 3 and report["num_images_without_text"] == 3
    assert report["rows_naming_missing_files"] == ["dog/9.png"]
    assert any("dog/notes.txt" in row for row in report["texts_without_image"])
    assert any("have no text" in w for w in data.warnings) and any("do not exist" in w for w in data.warnings)


def test_per_split_metadata_names_files_relative_to_its_folder(tmp_path):
    for split, count in (("train", 4), ("val", 2)):
        rows = []
        for label in ("a", "b"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (i * 30, 9, 9) if label == "a" else (9, i * 30, 9)).save(tmp_path / split / label / f"{i}.png")
                rows.append({"file_name": f"{label}/{i}.png", "text": f"{split} {label} {i}"})
        (tmp_path / split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = load_dataset(tmp_path)
    assert all(s.text == f"train {data.classes[s.label]} {s.relpath.split('/')[-1][0]}" for s in data.train)
    assert all(s.text and s.text.startswith("val ") for s in data.val)


def test_fusion_beats_either_input_alone(fused):
    ablation = fused.ablation
    alone = max(ablation["image_only"], ablation["text_only"])
    assert alone <= 0.65  # by construction neither input alone can do much better than 0.5
    assert ablation["image_and_text"] >= alone + 0.25, ablation
    assert fused.metrics["accuracy"] == pytest.approx(ablation["image_and_text"], abs=1e-3)
    info = json.loads((fused.path / "transfer.json").read_text())
    assert info["ablation"] == ablation and info["spec"]["text"]["encoder"] == "minilm"
    assert info["text"]["report"]["images_with_text"] == 360


def test_hashing_encoder_learns_the_words_itself(xor_dir, zoo_path):
    result = fit(xor_dir, strategy="feature-extractor", image_size=32, zoo=zoo_path, name="parcels-hashing",
                 text_encoder="hashing")
    ablation = result.ablation
    assert ablation["image_and_text"] >= max(ablation["image_only"], ablation["text_only"]) + 0.25, ablation


@pytest.mark.parametrize("strategy", ["shallow", "fine-tune", "from-scratch"])
def test_every_strategy_takes_text(xor_dir, zoo_path, strategy):
    result = fit(xor_dir, strategy=strategy, image_size=32, epochs=1, batch_size=16, zoo=zoo_path,
                 name=f"parcels-{strategy}", text_encoder="hashing")
    assert set(result.ablation) == {"image_only", "text_only", "image_and_text"}
    loaded = ModelCache().get(result.name, zoo=zoo_path)
    assert loaded.spec.text["encoder"] == "hashing"
    image = next(xor_dir.glob("red/*.png"))
    assert probabilities(loaded, [image], texts=["sent by airmail"]).shape == (1, 2)
    if strategy == "fine-tune":  # pretrained image features: the fused model is good after one epoch
        assert result.metrics["accuracy"] >= 0.75, result.ablation


def test_either_input_alone_still_answers(fused, xor_dir, zoo_path):
    image = next(xor_dir.glob("red/*.png"))
    cache = ModelCache()
    for images, texts in (([image], ["sent by airmail"]), ([image], None), ([None], ["sent by airmail"])):
        (top,) = predict(fused.name, images, texts=texts, top_k=2, zoo=zoo_path, cache=cache)
        assert [p["label"] for p in top] in (["red", "blue"], ["blue", "red"])
        assert sum(p["score"] for p in top) == pytest.approx(1.0, abs=1e-4)
    # the sentence changes the answer: digit fixed, transport flipped -> class flipped
    with_air = predict(fused.name, [image], texts=["flown in on a plane"], top_k=1, zoo=zoo_path, cache=cache)
    with_sea = predict(fused.name, [image], texts=["delivered by ferry"], top_k=1, zoo=zoo_path, cache=cache)
    assert with_air[0][0]["label"] != with_sea[0][0]["label"]


def test_multimodal_model_reloads_in_a_fresh_process(fused, xor_dir, zoo_path):
    images = [str(p) for p in sorted(xor_dir.glob("*/*.png"))[:6]]
    texts = ["sent by airmail", "delivered by ferry", "", "the parcel went by air", "a completely new sentence", "by sea"]
    code = (
        "import json, sys\n"
        "from zoo.predict import ModelCache, probabilities\n"
        "loaded = ModelCache().get(sys.argv[1], zoo=sys.argv[2])\n"
        "print(json.dumps(probabilities(loaded, json.loads(sys.argv[3]), texts=json.loads(sys.argv[4])).tolist()))\n"
    )
    done = run_python(code, fused.name, str(zoo_path), json.dumps(images), json.dumps(texts))
    assert done.returncode == 0, done.stderr
    from zoo.predict import LoadedModel

    before = probabilities(LoadedModel(fused.name, fused.model.eval(), ModelCache().get(fused.name, zoo=zoo_path).spec,
                                       None), images, texts=texts)
    assert torch.allclose(before, torch.tensor(json.loads(done.stdout.splitlines()[-1])), atol=1e-5)


def test_text_encoder_without_texts_says_how_to_add_them(digits_small, zoo_path):
    with pytest.raises(DataError, match="metadata.jsonl"):
        fit(digits_small, strategy="feature-extractor", image_size=32, zoo=zoo_path, text_encoder="minilm")


def test_image_only_model_refuses_text(zoo_path, digits_small):
    from zoo import ZooError

    result = fit(digits_small, strategy="feature-extractor", image_size=32, zoo=zoo_path, name="digits-no-text")
    with pytest.raises(ZooError, match="takes images only"):
        predict(result.name, [next(digits_small.glob("0/*.png"))], texts=["hello"], zoo=zoo_path)
