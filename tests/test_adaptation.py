"""New domains, lopsided classes, and models continued from the zoo.

Domain shift, built from real images: the source is scikit-learn's digits; the target is the same
task seen through another camera (random ink and paper colours, sometimes light on dark, a slight
blur, noise), generated here. The fit gets the unlabelled target images; a labelled target test set
is held out and never shown to it. Imbalance: a 20:1 digits subset, scored on a balanced held-out
test split. Lineage: a model continued from a zoo model, then continued again.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import run_cli
from fixtures.digit_sets import accuracy_on, make_domains, make_lopsided
from transfer.fit import fit


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """source/<digit>/*.png (900), target/*.png (450, no labels), target-test/<digit>/*.png (447)."""
    root = make_domains(tmp_path_factory.mktemp("domains"))
    (root / "target" / "broken.png").write_bytes(b"not an image")  # skipped, and said so
    return root


@pytest.mark.parametrize(("strategy", "settings"), [
    ("feature-extractor", dict(image_size=64)),
    ("fine-tune", dict(image_size=32, epochs=10)),
])
def test_adapting_to_unlabelled_target_images_raises_their_accuracy(domains, tmp_path, strategy, settings):
    common = dict(strategy=strategy, zoo=tmp_path, workers=0, **settings)
    plain = fit(domains / "source", name="plain", **common)
    adapted = fit(domains / "source", name="adapted", target_domain=domains / "target", **common)
    assert plain.adaptation is None
    report = adapted.adaptation
    assert report["method"] == ("coral" if strategy == "feature-extractor" else "dann+coral")
    assert report["shift"] >= report["threshold"] and not report["labelled"] and report["images"] == 450
    assert [file for file, _ in adapted.skipped] == ["target domain: broken.png"]
    before, after = accuracy_on(plain, domains / "target-test"), accuracy_on(adapted, domains / "target-test")
    print(f"{strategy}: target {before:.3f} -> {after:.3f}, source {plain.metrics['accuracy']:.3f} -> "
          f"{adapted.metrics['accuracy']:.3f}")
    assert after >= before + 0.10  # chance is 0.10
    assert adapted.metrics["accuracy"] >= plain.metrics["accuracy"] - 0.03  # the source is not forgotten
    card = (adapted.path / "README.md").read_text()
    assert "## Domain adaptation" in card and report["method"] in card


def test_a_labelled_target_is_scored_with_and_without_adaptation(domains, tmp_path):
    result = fit(domains / "source", strategy="feature-extractor", image_size=64, zoo=tmp_path, name="scored",
                 target_domain=domains / "target-test", workers=0)
    scores = result.adaptation["target_accuracy"]
    assert result.adaptation["labelled"] and scores["adapted"] >= scores["unadapted"] + 0.10
    assert "look different from the training images" in " ".join(result.notes)


def test_auto_leaves_a_target_that_looks_like_the_data_alone(domains, tmp_path):
    same = fit(domains / "source", strategy="feature-extractor", image_size=64, zoo=tmp_path, name="same",
               target_domain=domains / "source", workers=0)  # the training images themselves
    assert same.adaptation["method"] is None and same.adaptation["shift"] < same.adaptation["threshold"]
    assert "does not adapt" in same.adaptation["reason"]


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory):
    """train/: digits 0-4 with 100 images each, 5-9 with 5 each (20:1); val/ and test/: balanced."""
    return make_lopsided(tmp_path_factory.mktemp("lopsided"))


def test_balancing_lopsided_classes_raises_minority_recall_and_macro_f1(lopsided, tmp_path):
    common = dict(strategy="feature-extractor", image_size=64, zoo=tmp_path, workers=0)
    untouched = fit(lopsided, name="untouched", balance="none", **common)
    balanced = fit(lopsided, name="balanced", **common)  # balance="auto"
    assert balanced.balance["method"] == "weights" and balanced.balance["ratio"] == 20
    assert balanced.balance["minority"] == ["5", "6", "7", "8", "9"] and untouched.metrics_split == "test"

    def minority_recall(result):
        return np.mean([result.metrics["per_class"][label]["recall"] for label in "56789"])

    print(f"minority recall {minority_recall(untouched):.3f} -> {minority_recall(balanced):.3f}, macro-F1 "
          f"{untouched.metrics['macro_f1']:.3f} -> {balanced.metrics['macro_f1']:.3f}")
    assert minority_recall(balanced) > minority_recall(untouched)
    assert balanced.metrics["macro_f1"] > untouched.metrics["macro_f1"]
    assert any("imbalanced" in warning and "5, 6" in warning for warning in balanced.warnings)
    assert "20:1" in " ".join(balanced.notes) and "macro-F1" in " ".join(balanced.notes)


def test_a_model_continued_from_the_zoo_records_its_lineage(digits_small, tmp_path):
    zoo = tmp_path / "zoo"
    five, six = tmp_path / "five", tmp_path / "six"
    for digit in "012345":
        if digit != "5":
            shutil.copytree(digits_small / digit, five / digit)
        shutil.copytree(digits_small / digit, six / digit)
    fit(five, strategy="feature-extractor", image_size=32, zoo=zoo, name="first", workers=0)
    second = fit(six, backbone="zoo:first", strategy="feature-extractor", image_size=32, zoo=zoo, name="second",
                 workers=0)  # a new class: a new head on the continued backbone
    assert second.classes == list("012345") and second.parent["name"] == "first"
    third = fit(six, backbone="zoo:second", strategy="fine-tune", image_size=32, epochs=1, zoo=zoo, name="third",
                workers=0)  # the same classes: fine-tune starts from second's head, no new warm-up
    assert [row.get("phase") for row in third.history].count("warm-up") == 0
    info = json.loads((third.path / "transfer.json").read_text())
    assert info["parent"]["name"] == "second" and info["lineage"] == ["second", "first"]
    assert "second" in (third.path / "README.md").read_text().split("## Lineage")[1]
    shown = run_cli("zoo", "show", "third", "--zoo", str(zoo))
    assert shown.returncode == 0 and "lineage    third <- second <- first <- tf_efficientnet_lite0" in shown.stdout


def test_auto_does_not_adapt_a_network_trained_from_scratch():
    """Measured in benchmarks/adaptation.py: DANN on a random start took the source from 0.81 to 0.27."""
    from types import SimpleNamespace

    from transfer.target import Adaptation

    shifted = Adaptation(target=SimpleNamespace(train=[0] * 450), mode="auto", shift=0.3, adapt=True)
    assert shifted.for_strategy("fine-tune").adapt and shifted.for_strategy("feature-extractor").adapt
    scratch = shifted.for_strategy("from-scratch")
    assert not scratch.adapt and scratch.method(trains_backbone=True) is None
    assert "trained from scratch is not adapted" in scratch.sentence() and "--adaptation on" in scratch.sentence()
    forced = Adaptation(target=SimpleNamespace(train=[0] * 450), mode="on", shift=0.3, adapt=True)
    assert forced.for_strategy("from-scratch").adapt
