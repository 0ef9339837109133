"""Why a model decides and taking it elsewhere: Grad-CAM (`zoo.explain`), the misclassified list
saved with a fit (`transfer.errors`, `zoo show --errors`), ONNX export (`zoo.onnx_export`) and
`transfer fit --dry-run`.

The models: one per strategy on 400 digits at 32 px (trainable ones for one epoch: these tests are
about plumbing every strategy through, not accuracy) and an image+text model (hashing encoder).
Grad-CAM's quality is checked on a real photo with the built-in ImageNet classifier.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conftest import ASSETS, run_cli, run_python
from test_text import xor_dir  # noqa: F401  (a fixture: test_text's image+text task, reused)
from transfer.fit import fit
from zoo import ZooError
from zoo.predict import ModelCache, explain, probabilities

STRATEGIES = ("feature-extractor", "shallow", "fine-tune", "from-scratch")
COFFEE_CUP = (165, 5, 420, 300)  # the cup (with its handle) in assets/photos/coffee.jpg, boxed by hand, generous


@pytest.fixture(scope="module")
def models(digits_small, xor_dir, zoo_path):  # noqa: F811
    """name -> FitResult: the four strategies on digits, and an image+text model."""
    results = {}
    for strategy in STRATEGIES:
        epochs = 1 if strategy in ("fine-tune", "from-scratch") else None
        results[strategy] = fit(digits_small, strategy=strategy, image_size=32, epochs=epochs, batch_size=16,
                                zoo=zoo_path, name=f"why-{strategy}")
    results["image+text"] = fit(xor_dir, strategy="feature-extractor", image_size=32, zoo=zoo_path,
                                name="why-parcels", text_encoder="hashing")
    return results


def test_gradcam_of_the_builtin_classifier_peaks_on_the_cup(zoo_path):
    """The espresso photo pasted into a corner of a large grey canvas (so the cup is far from the centre
    the crop is taken around): the heatmap peaks inside the hand-drawn box around the cup, and most of
    its heat lies there, far above the box's share of the picture."""
    photo = Image.open(ASSETS / "photos" / "coffee.jpg").convert("RGB")
    loaded = ModelCache().get("tf_efficientnet_lite0", zoo=zoo_path)
    for corner in [(0, 0), (200, 400)]:
        canvas = Image.new("RGB", (800, 800), (128, 128, 128))
        canvas.paste(photo, corner)
        box = np.add(COFFEE_CUP, corner * 2)  # (left, top, right, bottom) on the canvas
        shown = explain(loaded, canvas)
        assert shown.label == "espresso" and shown.layer == "blocks.6"
        assert shown.heatmap.shape == (224, 224) and shown.overlay.size == (224, 224)
        left, top, right, bottom = shown.crop_box  # the centre crop, in fractions of the canvas
        xs = (left + (np.arange(224) + 0.5) / 224 * (right - left)) * canvas.width
        ys = (top + (np.arange(224) + 0.5) / 224 * (bottom - top)) * canvas.height
        inside = (xs[None, :] >= box[0]) & (xs[None, :] <= box[2]) & (ys[:, None] >= box[1]) & (ys[:, None] <= box[3])
        row, column = np.unravel_index(shown.heatmap.argmax(), shown.heatmap.shape)
        assert inside[row, column], (corner, xs[column], ys[row], box)
        share = shown.heatmap[inside].sum() / shown.heatmap.sum()
        assert share > 2 * inside.mean(), (corner, share, inside.mean())


def test_explain_works_for_every_strategy_and_an_image_text_model(models, xor_dir, zoo_path):  # noqa: F811
    digit = ASSETS / "digits" / "3" / "0003.png"
    parcel = next(xor_dir.glob("red/*.png"))
    cache = ModelCache()
    for kind, result in models.items():
        loaded = cache.get(result.name, zoo=zoo_path)
        image, text = (parcel, "the parcel went by sea") if kind == "image+text" else (digit, None)
        expected = probabilities(loaded, [image], texts=[text] if text else None)[0]
        for target in (None, result.classes[1]):
            shown = explain(loaded, image, target, text=text)
            index = result.classes.index(shown.label)
            assert shown.label == (target or result.classes[int(expected.argmax())]), kind
            assert shown.score == pytest.approx(float(expected[index]), abs=1e-4), kind  # what predict says
            assert shown.heatmap.shape == (32, 32) and shown.heatmap.dtype == np.float32
            assert 0 <= shown.heatmap.min() and shown.heatmap.max() <= 1 and np.isfinite(shown.heatmap).all()
            assert shown.overlay.size == (32, 32) and shown.overlay.mode == "RGB"
        spec = loaded.spec  # the layer comes from the spec: the last stage kept
        stage = "blocks.6" if spec.cut_stage is None else loaded.model.feature_info[spec.cut_stage]["module"]
        assert shown.layer == ("image." if kind == "image+text" else "") + stage, kind
    shallow = cache.get(models["shallow"].name, zoo=zoo_path)
    with pytest.raises(ZooError, match="'eleven' is not one of the model's classes"):
        explain(shallow, digit, "eleven")
    with pytest.raises(ZooError, match="takes images only"):
        explain(shallow, digit, text="hello")


def test_the_misclassified_list_is_the_confusion_matrix_off_its_diagonal(models, digits_small, zoo_path):
    result = models["feature-extractor"]
    saved = json.loads((result.path / "transfer.json").read_text())["errors"]
    assert saved == result.errors and saved["split"] == "val" and saved["evaluated"] == result.num_val
    matrix, classes = result.metrics["confusion_matrix"], result.classes
    off_diagonal = {(classes[t], classes[p]): count for t, row in enumerate(matrix) for p, count in enumerate(row)
                    if t != p and count}
    assert off_diagonal, "a 32 px digits model makes some mistakes: the test needs some"
    assert Counter((row["true"], row["predicted"]) for row in saved["files"]) == off_diagonal
    assert saved["count"] == sum(off_diagonal.values())
    scores = [row["score"] for row in saved["files"]]
    assert scores == sorted(scores, reverse=True) and all(0 < score <= 1 for score in scores)
    listed = saved["files"][:3]  # each is an image of its true class that the saved model really mistakes
    assert all(row["file"].startswith(f"{row['true']}/") for row in listed)
    scores = probabilities(ModelCache().get(result.name, zoo=zoo_path), [digits_small / row["file"] for row in listed])
    assert [classes[int(row.argmax())] for row in scores] == [row["predicted"] for row in listed]

    printed = run_cli("zoo", "show", result.name, "--errors", "--zoo", str(zoo_path))
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.strip().splitlines()
    assert lines[0].startswith(f"{saved['count']} of {result.num_val} val images misclassified")
    rows = [line.split() for line in lines[2:]]
    assert Counter((true, predicted) for _, true, predicted, _ in rows) == off_diagonal
    builtin = run_cli("zoo", "show", "tf_efficientnet_lite0", "--errors", "--zoo", str(zoo_path))
    assert builtin.returncode == 2 and "no list of misclassified images" in builtin.stderr


ONNX_CHECK = """
import json, sys
import numpy as np, onnx, onnxruntime
from zoo.onnx_export import export_onnx, onnx_feeds
from zoo.predict import ModelCache, probabilities
zoo, out, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cache, report = ModelCache(), {}
for name, (images, texts) in jobs.items():
    done = export_onnx(name, zoo=zoo, output=f"{out}/{name}.onnx")
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    loaded = cache.get(name, zoo=zoo)
    logits, got = session.run(None, onnx_feeds(loaded.spec, images, texts))
    expected = probabilities(loaded, images, texts=texts).numpy()
    meta = {p.key: p.value for p in onnx.load(str(done.path)).metadata_props}
    report[name] = {"difference": float(np.abs(got - expected).max()), "rows": len(got), "meta": meta,
                    "inputs": [i.name for i in session.get_inputs()], "checked": done.max_difference}
report["transfer imported"] = any(m == "transfer" or m.startswith("transfer.") for m in sys.modules)
print(json.dumps(report))
"""


def test_onnx_export_matches_pytorch_in_a_fresh_process_without_transfer(models, xor_dir, zoo_path, tmp_path):  # noqa: F811
    digits = [str(p) for p in sorted((ASSETS / "digits").glob("*/*.png"))[::40]]  # 5 images: not the traced batch
    parcels = [str(p) for p in sorted(xor_dir.glob("*/*.png"))[:4]]
    jobs = {result.name: (digits, None) for kind, result in models.items() if kind != "image+text"}
    jobs[models["image+text"].name] = (parcels, ["by sea", None, "flown in on a plane", ""])  # texts and none
    done = run_python(ONNX_CHECK, str(zoo_path), str(tmp_path), json.dumps(jobs))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report.pop("transfer imported") is False
    for name, checked in report.items():
        assert checked["rows"] == len(jobs[name][0]), name  # the batch size is free
        assert checked["difference"] <= 1e-4 and checked["checked"] <= 1e-4, (name, checked)
        spec = json.loads((zoo_path / name / "transfer.json").read_text())["spec"]
        meta = checked["meta"]
        assert json.loads(meta["label_names"]) == spec["label_names"]
        assert json.loads(meta["mean"]) == spec["mean"] and json.loads(meta["std"]) == spec["std"]
        assert json.loads(meta["input_size"]) == [3, 32, 32]
    assert report[models["image+text"].name]["inputs"] == ["image", "text_ngram_ids"]
    assert report[models["shallow"].name]["inputs"] == ["image"]


def test_onnx_export_refuses_what_it_cannot_do(models, zoo_path, tmp_path):
    existing = tmp_path / "taken.onnx"
    existing.write_bytes(b"mine")
    refused = run_cli("zoo", "export", models["shallow"].name, "--format", "onnx", "--output", str(existing),
                      "--zoo", str(zoo_path))
    assert refused.returncode == 2 and "already exists" in refused.stderr and existing.read_bytes() == b"mine"
    wrong = run_cli("zoo", "export", models["shallow"].name, "--format", "onnx", "--output", str(tmp_path / "m.zip"),
                    "--zoo", str(zoo_path))
    assert wrong.returncode == 2 and "ending in .onnx" in wrong.stderr and "Traceback" not in wrong.stderr


def test_dry_run_prints_the_plan_of_every_strategy_and_trains_nothing(digits_small, tmp_path, capsys):
    from transfer.__main__ import main

    zoo = tmp_path / "zoo"
    for strategy in STRATEGIES:
        code = main(["fit", str(digits_small), "--strategy", strategy, "--image-size", "32", "--dry-run", "--json",
                     "--quiet", "--zoo", str(zoo)])
        plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 0 and plan["strategy"] == strategy and plan["device"] == "cpu"
        assert (plan["num_train"], plan["num_val"], plan["image_size"]) == (320, 80, 32)
        assert plan["estimated_seconds"] > 0 and plan["epochs"] >= 1
    assert not zoo.exists() or not [p for p in zoo.iterdir() if p.name != "cache"]  # no model was saved
    printed = run_cli("transfer", "fit", str(digits_small), "--strategy", "fine-tune", "--epochs", "3", "--dry-run",
                      "--zoo", str(zoo))
    assert printed.returncode == 0, printed.stderr
    assert "strategy   fine-tune" in printed.stdout and "epochs     3" in printed.stdout
    assert "device     cpu" in printed.stdout and "nothing was trained" in printed.stdout
