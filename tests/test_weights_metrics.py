"""zoo.weights resolution rules and transfer.metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch

from transfer.metrics import classification_metrics
from zoo import ZooError
from zoo.catalog import resolve_weights
from zoo.weights import create_backbone


def test_local_safetensors_file_with_its_architecture(zoo_path, tmp_path):
    bundled = resolve_weights("tf_efficientnet_lite0", zoo=zoo_path)
    copy = tmp_path / "my-weights.safetensors"
    copy.write_bytes(bundled.file.read_bytes())
    weights = resolve_weights(f"tf_efficientnet_lite0@{copy}", zoo=zoo_path)
    assert weights.source == "file"
    model = create_backbone(weights, num_classes=3)
    reference = safetensors.torch.load_file(str(bundled.file))
    assert torch.equal(model.conv_stem.weight, reference["conv_stem.weight"])  # real weights, not random
    assert model.get_classifier().out_features == 3


def test_file_without_architecture_says_how_to_name_it(tmp_path):
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(ZooError, match="ARCH@"):
        resolve_weights(str(path))


def test_pickles_are_never_loaded(tmp_path):
    path = tmp_path / "model.bin"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(ZooError, match="only .safetensors"):
        resolve_weights(f"tf_efficientnet_lite0@{path}")


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({"conv_stem.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ZooError, match="do not fit"):
        create_backbone(resolve_weights(f"tf_efficientnet_lite0@{path}"))


def test_offline_hub_name_is_an_error_not_random_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZooError, match="Offline you can use the bundled backbones"):
        resolve_weights("convnext_tiny")
    with pytest.raises(ZooError, match="Unknown backbone"):
        resolve_weights("no_such_net_at_all")


def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 300)
    predicted = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 4, 300))
    predicted[predicted == 3] = 2  # class 3 is never predicted: precision 0, still counted
    ours = classification_metrics(truth.tolist(), predicted.tolist(), ["a", "b", "c", "d"])
    assert ours["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert ours["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert ours["confusion_matrix"] == confusion_matrix(truth, predicted).tolist()
    precision = precision_score(truth, predicted, average=None, zero_division=0)
    recall = recall_score(truth, predicted, average=None)
    for i, label in enumerate("abcd"):
        assert ours["per_class"][label]["precision"] == pytest.approx(precision[i], abs=1e-4)
        assert ours["per_class"][label]["recall"] == pytest.approx(recall[i], abs=1e-4)
