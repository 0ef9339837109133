"""The four strategies on real data with the real bundled ImageNet weights.

Digits (scikit-learn, 10 classes, chance 0.10): frozen strategies on all 1,797 images at 64 px
(they share one feature cache); trainable strategies on 400 of them at 32 px, 6 epochs, batch 16.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import ASSETS, run_python
from transfer import Cancelled
from transfer.fit import fit
from zoo.catalog import list_entries

NETWORK = dict(image_size=32, epochs=6, batch_size=16)


@pytest.fixture(scope="module")
def frozen(digits_dir, zoo_path):
    return {
        strategy: fit(digits_dir, strategy=strategy, image_size=64, zoo=zoo_path, name=f"digits-{strategy}")
        for strategy in ("feature-extractor", "shallow")
    }


@pytest.fixture(scope="module")
def trained(digits_small, zoo_path):
    return {
        strategy: fit(digits_small, strategy=strategy, zoo=zoo_path, name=f"digits-{strategy}", **NETWORK)
        for strategy in ("fine-tune", "from-scratch")
    }


def test_feature_extractor_learns_digits(frozen):
    result = frozen["feature-extractor"]
    assert result.metrics["accuracy"] >= 0.85, result.metrics  # chance is 0.10
    assert result.metrics_split == "val" and result.num_val == 359
    assert result.trainable_parameters == 1280 * 10 + 10  # only the new head trained


def test_shallow_chooses_its_cut_on_validation(frozen):
    result = frozen["shallow"]
    search = result.details["cut_search"]
    assert [row["stage"] for row in search] == [0, 1, 2, 3, 4]
    best = max(search, key=lambda row: row["val_accuracy"])
    assert result.details["cut_stage"] == best["stage"]
    assert result.metrics["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-3)
    assert result.metrics["accuracy"] >= 0.85
    spec = json.loads((result.path / "transfer.json").read_text())["spec"]
    assert spec["cut_stage"] == best["stage"]
    # the truncated network really is smaller than the whole one
    assert result.total_parameters < frozen["feature-extractor"].total_parameters


def test_fine_tune_beats_from_scratch_with_the_same_budget(trained):
    scratch, tuned = trained["from-scratch"], trained["fine-tune"]
    # measured with these settings over seeds 0-9 at 1 and 2 threads, two fits running at once:
    # from-scratch 0.30-0.54 (mean 0.44), fine-tune 0.78-0.88 (mean 0.83), a gap of 0.275-0.56 (chance is 0.10)
    assert scratch.metrics["accuracy"] >= 0.20, scratch.history  # a random start learns: twice chance
    assert tuned.metrics["accuracy"] >= scratch.metrics["accuracy"] + 0.25  # pretrained wins, and by far
    assert tuned.trainable_parameters == tuned.total_parameters  # everything trained in phase 2
    phases = [row["phase"] for row in tuned.history]
    assert phases[0] == "warm-up" and phases[-1] == "train"
    assert "warm-up" not in [row["phase"] for row in scratch.history]


def test_the_same_seed_gives_the_same_model(digits_small, tmp_path):
    """Split, initialisation, augmentation and batch order all follow `seed`; the threads are recorded."""
    runs = [fit(digits_small, strategy="from-scratch", zoo=tmp_path, name=f"again-{n}", seed=7, image_size=32,
                epochs=1, batch_size=16) for n in range(2)]
    first, second = ([{k: v for k, v in row.items() if k not in ("seconds", "train_images_per_second")}
                      for row in run.history] for run in runs)
    assert first == second and runs[0].metrics == runs[1].metrics
    settings = json.loads((runs[0].path / "transfer.json").read_text())["settings"]
    assert settings["seed"] == 7 and settings["threads"] == torch.get_num_threads()


def test_saved_models_reload_in_a_fresh_process_with_the_same_probabilities(frozen, trained, zoo_path):
    images = sorted(str(p) for p in (ASSETS / "digits").glob("*/*.png"))[::20] + [str(ASSETS / "photos" / "cat.jpg")]
    results = {**frozen, **trained}
    code = (
        "import json, sys\n"
        "from zoo.predict import ModelCache, probabilities\n"
        "cache = ModelCache()\n"
        "out = {name: probabilities(cache.get(name, zoo=sys.argv[1]), json.loads(sys.argv[2])).tolist()\n"
        "       for name in json.loads(sys.argv[3])}\n"
        "print(json.dumps(out))\n"
    )
    names = [result.name for result in results.values()]
    done = run_python(code, str(zoo_path), json.dumps(images), json.dumps(names))
    assert done.returncode == 0, done.stderr
    reloaded = json.loads(done.stdout.splitlines()[-1])
    from zoo.model import ModelSpec
    from zoo.predict import LoadedModel, probabilities

    for result in results.values():
        spec = ModelSpec.from_dict(json.loads((result.path / "transfer.json").read_text())["spec"])
        before = probabilities(LoadedModel(result.name, result.model.eval(), spec, None), images)
        # the reloaded model has BatchNorm folded into its convolutions (zoo.predict): the same
        # function, rounded differently in the last bits
        assert torch.allclose(before, torch.tensor(reloaded[result.name]), atol=1e-4), result.strategy


def test_cached_feature_metrics_match_the_saved_model(frozen, digits_dir, zoo_path):
    """Frozen fits score validation on cached features; the saved model must agree image by image."""
    from transfer.data import load_dataset
    from zoo.predict import ModelCache, probabilities

    result = frozen["feature-extractor"]
    loaded = ModelCache().get(result.name, zoo=zoo_path)
    dataset = load_dataset(digits_dir)  # same seed: the same validation split as the fit
    predicted = probabilities(loaded, [digits_dir / s.relpath for s in dataset.val]).argmax(1)
    truth = torch.tensor([s.label for s in dataset.val])
    assert (predicted == truth).float().mean().item() == pytest.approx(result.metrics["accuracy"], abs=1e-6)


def test_bundled_weights_are_real_imagenet_weights(zoo_path):
    from timm.data import ImageNetInfo

    from zoo.images import open_image
    from zoo.model import ModelSpec, center_crop_uint8, normalize
    from zoo.catalog import resolve_weights
    from zoo.weights import create_backbone

    weights = resolve_weights("tf_efficientnet_lite0", zoo=zoo_path)
    assert weights.source == "bundled" and weights.file.suffix == ".safetensors"
    model = create_backbone(weights).eval()  # keeps the ImageNet classifier
    spec = ModelSpec.for_weights(weights, list(ImageNetInfo().label_names()))
    assert spec.mean == (0.5, 0.5, 0.5)  # what these TF-ported weights expect
    info = ImageNetInfo()
    for photo, expected in (("cat.jpg", "cat"), ("coffee.jpg", "espresso")):
        crop = center_crop_uint8(open_image(ASSETS / "photos" / photo, shorter_side=spec.resized_side), spec)
        with torch.inference_mode():
            top3 = model(normalize(crop[None], spec)).softmax(1).topk(3).indices[0].tolist()
        names = [info.index_to_description(i) for i in top3]
        assert any(expected in name.lower() for name in names), (photo, names)


def test_stem_learns_10_to_20_times_slower_than_the_head(zoo_path):
    from transfer.strategies import STRATEGIES
    from transfer.train import NetworkConfig, make_optimizer
    from zoo.catalog import resolve_weights
    from zoo.weights import create_backbone

    plan = STRATEGIES["fine-tune"]
    model = create_backbone(resolve_weights("tf_efficientnet_lite0", zoo=zoo_path), num_classes=10)
    config = NetworkConfig(epochs=4, lr=plan.lr, layer_decay=plan.layer_decay, warmup_epochs=0)
    optimizer, scheduler = make_optimizer(model, config, steps_per_epoch=10)
    scheduler.step_update(5)
    stem, head = model.conv_stem.weight, model.classifier.weight
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    ratio = rate[id(head)] / rate[id(stem)]
    assert 10 <= ratio <= 20, ratio


def test_cancel_stops_and_saves_nothing(digits_small, tmp_path):
    calls = []

    def stop_after_a_few_checks() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        fit(digits_small, strategy="from-scratch", zoo=tmp_path, name="never-saved", image_size=32,
            should_stop=stop_after_a_few_checks)
    assert [entry.name for entry in list_entries(zoo=tmp_path) if not entry.builtin] == []
    assert not [p for p in tmp_path.iterdir() if p.name != "cache"]


def test_time_budget_is_honoured(digits_small, zoo_path, caplog):
    caplog.set_level(logging.INFO)
    result = fit(digits_small, strategy="from-scratch", zoo=zoo_path, name="digits-budget", image_size=32,
                 epochs=50, max_seconds=4)
    assert result.stopped_by_budget
    assert result.train_seconds < 15  # 50 epochs would take minutes
    assert any("training" in r.message and "parameters" in r.message for r in caplog.records)
