"""`auto`: the decision rule as a table of cases, then the measurements on real data and weights.

Two real datasets, measured with the bundled ImageNet EfficientNet-Lite0:
- small natural photos: random crops of the photos that ship inside scikit-image and scikit-learn
  (a cat, coffee, a rocket, an astronaut, motorcycles, a flower, a temple): 7 classes, 20 each. The
  crops look like the photos ImageNet is made of, so the advice must be a frozen strategy, and the
  numbers must say why (small, close BatchNorm statistics, the last layer separating as well as any).
- 400 handwritten 8x8 digits (scikit-learn): small and unlike photos, so `shallow`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from types import SimpleNamespace
from pathlib import Path

import pytest

from conftest import ASSETS, run_cli
from transfer.advise import advise
from transfer.decide import (
    DEPTH_MARGIN,
    LARGE_PER_CLASS,
    SCRATCH_PER_CLASS,
    SHIFT_SIMILAR,
    SimilarityMeasure,
    SizeMeasure,
    choose_strategy,
)
from transfer.measure import SPEED_MIN_SECONDS, SPEED_RANGE, stratified_sample
from transfer.data import load_dataset
from transfer.strategies import STRATEGIES, estimate_pass_seconds, estimate_seconds

# --- the rule, as a table ------------------------------------------------------------------------------

STAGES = (0.55, 0.75, 0.82, 0.90, 0.91)
SIMILAR = dict(feature_shift=0.05, stage_accuracy=STAGES, final_accuracy=0.94)
DIFFERENT = dict(feature_shift=0.40, stage_accuracy=(0.60, 0.80, 0.85, 0.95, 0.93), final_accuracy=0.88)
DEEP_UNSUITED = dict(feature_shift=0.05, stage_accuracy=(0.60, 0.80, 0.85, 0.95, 0.93), final_accuracy=0.88)
FAR_BUT_DEEP_SUITED = dict(feature_shift=0.40, stage_accuracy=STAGES, final_accuracy=0.94)
AT_THE_LIMITS = dict(feature_shift=SHIFT_SIMILAR, stage_accuracy=(0.5, 0.9), final_accuracy=0.9 - DEPTH_MARGIN)
ALREADY_SEPARABLE = dict(feature_shift=0.05, stage_accuracy=STAGES, final_accuracy=0.99)
UNMEASURABLE = dict(feature_shift=None, stage_accuracy=(), final_accuracy=0.7)  # no BatchNorm, no stages
ESTIMATES = {"feature-extractor": 5.0, "shallow": 9.0, "fine-tune": 120.0, "from-scratch": 110.0}


def size(per_class: int, classes: int = 10) -> SizeMeasure:
    return SizeMeasure(num_train=per_class * classes, num_classes=classes, median_per_class=per_class,
                       smallest_class=per_class)


def similarity(numbers: dict) -> SimilarityMeasure:
    return SimilarityMeasure(**numbers, probe_images=400, image_size=224)


CASES = [
    # (case, images per class, similarity, budget seconds, expected)
    ("small, similar", 30, SIMILAR, None, "feature-extractor"),
    ("small, different", 30, DIFFERENT, None, "shallow"),
    ("small, close statistics but the deep layers do not suit", 30, DEEP_UNSUITED, None, "shallow"),
    ("small, far statistics though the deep layers suit", 30, FAR_BUT_DEEP_SUITED, None, "shallow"),
    ("small, exactly at both similarity limits", 30, AT_THE_LIMITS, None, "feature-extractor"),
    ("just below large", LARGE_PER_CLASS - 1, SIMILAR, None, "feature-extractor"),
    ("large, similar", LARGE_PER_CLASS, SIMILAR, None, "fine-tune"),
    ("large, different: pretrained still the better start", 300, DIFFERENT, None, "fine-tune"),
    ("very large, different", SCRATCH_PER_CLASS, DIFFERENT, None, "from-scratch"),
    ("very large, similar", SCRATCH_PER_CLASS, SIMILAR, None, "fine-tune"),
    ("large, but frozen features already separate the classes", 300, ALREADY_SEPARABLE, None, "feature-extractor"),
    ("large, similar, budget too short for fine-tune", 300, SIMILAR, 60, "feature-extractor"),
    ("very large, different, budget too short for training", SCRATCH_PER_CLASS, DIFFERENT, 60, "shallow"),
    ("small, different, budget just fits shallow", 30, DIFFERENT, 9, "shallow"),
    ("small, different, budget fits only feature-extractor", 30, DIFFERENT, 8.9, "feature-extractor"),
    ("large, similar, budget fits everything", 300, SIMILAR, 1000, "fine-tune"),
    ("nothing measurable: assume pretrained helps", 30, UNMEASURABLE, None, "feature-extractor"),
]


@pytest.mark.parametrize("case, per_class, numbers, budget, expected", CASES, ids=[case[0] for case in CASES])
def test_decision_table(case, per_class, numbers, budget, expected):
    choice = choose_strategy(size(per_class), similarity(numbers), ESTIMATES, budget)
    assert choice.strategy == expected, (case, choice)
    assert sorted(choice.preference) == sorted(STRATEGIES)
    if budget is not None:
        assert ESTIMATES[choice.strategy] <= budget  # never over the budget while something fits
        assert all(ESTIMATES[name] > budget for name in choice.over_budget)
        assert choice.preference.index(choice.strategy) == len(choice.over_budget)


def test_a_budget_shorter_than_every_estimate_says_so_and_picks_the_quickest():
    choice = choose_strategy(size(300), similarity(SIMILAR), ESTIMATES, budget_seconds=3)
    assert choice.strategy == "feature-extractor"
    assert choice.over_budget == ("fine-tune",)
    assert "No strategy fits your 3 s budget" in choice.reasons[-1]


def test_skipping_for_the_budget_is_explained_with_the_estimates():
    choice = choose_strategy(size(300), similarity(SIMILAR), ESTIMATES, budget_seconds=60)
    assert choice.over_budget == ("fine-tune",)
    assert "fine-tune (about 2 min)" in choice.reasons[-1] and "60 s budget" in choice.reasons[-1]


def test_reasons_are_three_plain_sentences_with_the_numbers():
    choice = choose_strategy(size(30), similarity(DIFFERENT), ESTIMATES)
    assert len(choice.reasons) == 3 and all(reason.endswith(".") for reason in choice.reasons)
    size_reason, similarity_reason, choice_reason = choice.reasons
    assert "300 training images in 10 classes, about 30 per class" in size_reason
    assert "look unlike" in similarity_reason and "shift 0.40" in similarity_reason
    assert "95% vs 88%" in similarity_reason  # the early stage beats the last one
    assert choice_reason.startswith("So: shallow")


def test_conflicting_evidence_reads_as_such():
    reason = choose_strategy(size(30), similarity(DEEP_UNSUITED), ESTIMATES).reasons[1]
    assert "close to" in reason and ", but its early layers" in reason


def test_a_cached_feature_pass_makes_frozen_estimates_cheaper_only():
    args = dict(num_train=400, num_eval=100, image_size=224)
    for name, plan in STRATEGIES.items():
        cold, warm = estimate_seconds(name, **args), estimate_seconds(name, features_cached=True, **args)
        uses_the_cache = not plan.trains_backbone or plan.head_warmup
        assert (warm < cold) == uses_the_cache, name


# --- real data, real weights ------------------------------------------------------------------------------

PHOTO_SIZE = 96  # px: the crops are 96 px; frozen fits and advice at this size keep the tests quick


@pytest.fixture(scope="module")
def photos_small(tmp_path_factory) -> Path:
    """photos/<class>/<n>.jpg: 20 random crops (45-90% of the side, flipped, brightened) per photo."""
    import skimage.data
    from PIL import Image, ImageEnhance
    from sklearn.datasets import load_sample_image

    left, right = skimage.data.stereo_motorcycle()[:2]
    sources = {"cat": [skimage.data.chelsea()], "coffee": [skimage.data.coffee()], "rocket": [skimage.data.rocket()],
               "astronaut": [skimage.data.astronaut()], "motorcycle": [left, right],
               "flower": [load_sample_image("flower.jpg")], "temple": [load_sample_image("china.jpg")]}
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("data") / "photos"
    for label, arrays in sources.items():
        (root / label).mkdir(parents=True)
        for index in range(20):
            photo = Image.fromarray(arrays[index % len(arrays)]).convert("RGB")
            width, height = photo.size
            side = rng.uniform(0.45, 0.9)
            crop_w, crop_h = int(width * side), int(height * side)
            x, y = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
            crop = photo.crop((x, y, x + crop_w, y + crop_h)).resize((PHOTO_SIZE, PHOTO_SIZE), Image.BICUBIC)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3))
            crop.save(root / label / f"{index:02d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def advice(photos_small, digits_small, zoo_path):
    return {"photos": advise(photos_small, image_size=PHOTO_SIZE, zoo=zoo_path),
            "digits": advise(digits_small, image_size=64, zoo=zoo_path)}


def test_small_natural_photos_get_a_frozen_strategy_and_the_numbers_say_why(advice):
    photos = advice["photos"]
    assert photos.strategy == "feature-extractor", photos.reasons
    assert photos.size == {"num_train": 112, "num_classes": 7, "median_per_class": 16.0, "smallest_class": 16,
                           "size_class": "small"}
    measured = photos.similarity
    assert measured["similar"] and measured["feature_shift"] < SHIFT_SIMILAR
    assert measured["final_accuracy"] >= max(measured["stage_accuracy"]) - DEPTH_MARGIN
    assert measured["final_accuracy"] >= 0.9  # chance is 1/7
    assert len(measured["stage_accuracy"]) == 5 and measured["probe_images"] == 140  # train + val, no test
    assert f"shift {measured['feature_shift']:.2f}" in photos.reasons[1]


def test_small_digits_get_shallow_because_they_look_unlike_photos(advice):
    digits, photos = advice["digits"], advice["photos"]
    assert digits.strategy == "shallow", digits.reasons
    measured = digits.similarity
    assert not measured["similar"]
    assert measured["feature_shift"] > SHIFT_SIMILAR > photos.similarity["feature_shift"]
    assert measured["depth_gain"] < -DEPTH_MARGIN  # an earlier stage separates digits better than the last
    assert measured["best_stage"] is not None and measured["best_stage"] < len(measured["stage_accuracy"])
    assert "look unlike" in digits.reasons[1]


def test_large_data_is_probed_on_a_sample_and_the_budget_is_respected(digits_dir, zoo_path):
    """1,797 digits (about 144 per class): large and unlike photos, so fine-tune; with a budget too
    short for fine-tune, the next best that fits, and the advice says why."""
    unlimited = advise(digits_dir, image_size=64, zoo=zoo_path)
    assert unlimited.size["size_class"] == "large" and unlimited.strategy == "fine-tune", unlimited.reasons
    assert unlimited.similarity["probe_images"] == 500 and not unlimited.similarity["similar"]
    budget = (unlimited.estimated_seconds["shallow"] + unlimited.estimated_seconds["fine-tune"]) / 2
    hurried = advise(digits_dir, image_size=64, zoo=zoo_path, budget_seconds=budget)
    assert hurried.strategy == "shallow" and hurried.over_budget == ["fine-tune"]
    assert hurried.estimated_seconds["shallow"] <= budget < hurried.estimated_seconds["fine-tune"]
    assert "exceeds your" in hurried.reasons[-1] and hurried.similarity == unlimited.similarity


def test_stratified_sample_keeps_every_class_in_train_and_val(digits_dir):
    dataset = load_dataset(digits_dir)
    sample = stratified_sample(dataset, 50)
    per_class = Counter(s.label for s in sample.train + sample.val)
    assert sorted(per_class) == list(range(10)) and max(per_class.values()) == 50
    assert {s.label for s in sample.val} == set(range(10)) and not sample.test
    assert set(sample.train) <= set(dataset.train) and set(sample.val) <= set(dataset.val)
    assert len(dataset.train) == 1438  # the dataset itself is untouched


def test_the_estimates_leave_out_the_cached_pass_and_allow_for_the_measured_speed(advice):
    photos = advice["photos"]
    # 140 images at 96 px: a pass the cost model puts under SPEED_MIN_SECONDS is mostly fixed costs,
    # so it does not rescale the estimates (it used to make them 10x too long for small uploads)
    assert estimate_pass_seconds(140, image_size=PHOTO_SIZE) < SPEED_MIN_SECONDS and photos.speed == 1.0
    split = dict(num_train=112, num_eval=28, image_size=PHOTO_SIZE, speed=photos.speed)
    estimates = photos.estimated_seconds
    assert estimates["feature-extractor"] == round(estimate_seconds("feature-extractor", features_cached=True,
                                                                    **split), 1)
    assert estimates["feature-extractor"] < estimate_seconds("feature-extractor", **split)
    assert estimates["fine-tune"] == round(estimate_seconds("fine-tune", features_cached=True, **split), 1)


def test_a_long_enough_pass_measures_this_machines_speed():
    from transfer.measure import pass_measurements

    lite0 = SimpleNamespace(architecture="tf_efficientnet_lite0")
    long_pass = SimpleNamespace(images=2000, feature_shift=lambda: 0.1)
    modelled = estimate_pass_seconds(2000, image_size=224)
    assert modelled >= SPEED_MIN_SECONDS
    assert pass_measurements(long_pass, 2 * modelled, 224, lite0)["speed"] == 2.0
    assert pass_measurements(long_pass, 1000 * modelled, 224, lite0)["speed"] == SPEED_RANGE[1]  # clamped
    short_pass = SimpleNamespace(images=40, feature_shift=lambda: 0.1)
    assert pass_measurements(short_pass, 5.0, 64, lite0)["speed"] is None


def test_estimates_scale_with_the_speed():
    args = dict(num_train=400, num_eval=100)
    for name in STRATEGIES:
        assert estimate_seconds(name, speed=3.0, **args) == pytest.approx(3 * estimate_seconds(name, **args))


@pytest.fixture(scope="module")
def fresh_zoo(tmp_path_factory) -> Path:
    """A zoo whose feature cache starts empty (the session zoo's may already hold these features)."""
    return tmp_path_factory.mktemp("fresh-zoo")


def test_fit_auto_runs_the_backbone_once_and_saves_the_advice(photos_small, fresh_zoo):
    from zoo.predict import ModelCache, predict

    from transfer.fit import fit

    events = []
    result = fit(photos_small, strategy="auto", image_size=PHOTO_SIZE, zoo=fresh_zoo, name="photos-auto",
                 progress=events.append)
    computed = [e for e in events if e.stage == "features" and e.message == "computing features" and e.done == e.total]
    assert len(computed) == 1  # the advice's pass; the fit itself read the cache
    assert any(e.stage == "features" and e.message == "features from the cache" for e in events)
    assert result.strategy == result.advice["strategy"] == "feature-extractor"
    info = json.loads((result.path / "transfer.json").read_text())
    assert info["strategy"] == "feature-extractor"
    assert info["advice"]["strategy"] == "feature-extractor" and len(info["advice"]["reasons"]) == 3
    assert info["advice"]["similarity"]["feature_shift"] == result.advice["similarity"]["feature_shift"]
    assert result.metrics["accuracy"] >= 0.9
    top = predict("photos-auto", [photos_small / "cat" / "00.jpg"], top_k=1, zoo=fresh_zoo, cache=ModelCache())
    assert top[0][0]["label"] == "cat"


def test_advice_on_features_a_plain_fit_cached(photos_small, fresh_zoo, zoo_path):
    """A frozen fit fills the cache without measuring the shift: the advice then re-runs a sample for
    it (and keeps the result), reuses the cached features for the probe, and agrees with an advice
    that measured everything itself."""
    from transfer.fit import fit

    size = 80  # a size nothing else in this zoo has cached
    fit(photos_small, strategy="feature-extractor", image_size=size, zoo=fresh_zoo, name="plain")
    events = []
    after_fit = advise(photos_small, image_size=size, zoo=fresh_zoo, progress=events.append)
    sampled = [e.total for e in events if e.stage == "features" and e.message == "computing features"]
    assert sampled and max(sampled) < 140  # a sample, not every image
    measured_itself = advise(photos_small, image_size=size, zoo=zoo_path).similarity
    assert after_fit.similarity["stage_accuracy"] == measured_itself["stage_accuracy"]  # the same features
    assert after_fit.similarity["feature_shift"] == pytest.approx(measured_itself["feature_shift"], abs=0.02)
    events.clear()
    again = advise(photos_small, image_size=size, zoo=fresh_zoo, progress=events.append)
    assert not [e for e in events if e.message == "computing features"]  # nothing runs the backbone now
    assert again.similarity == after_fit.similarity and again.strategy == after_fit.strategy


def test_cli_advise_json(zoo_path):
    done = run_cli("transfer", "advise", str(ASSETS / "digits"), "--image-size", "64", "--zoo", str(zoo_path),
                   "--budget-seconds", "120", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["preference"][0] == "shallow"  # what suits small digits; the budget may pass it over:
    assert result["strategy"] == result["preference"][len(result["over_budget"])]
    assert result["size"]["num_train"] == 160 and result["size"]["size_class"] == "small"
    assert set(result["similarity"]) >= {"feature_shift", "stage_accuracy", "final_accuracy", "similar"}
    assert len(result["reasons"]) == 3 and result["budget_seconds"] == 120


def test_cli_fit_defaults_to_auto_and_says_why(zoo_path):
    done = run_cli("transfer", "fit", str(ASSETS / "digits"), "--image-size", "64", "--zoo", str(zoo_path),
                   "--name", "cli-auto-digits")  # piped, as in a log or CI
    assert done.returncode == 0, done.stderr
    out, err = done.stdout, done.stderr
    assert "cli-auto-digits: shallow on tf_efficientnet_lite0" in out
    assert "auto chose shallow: You have 160 training images" in out
    assert "You have 160 training images" not in err  # the reasons come once, on stdout
    assert "auto chose shallow" in err  # ... while the progress says what is about to run
    assert f"next: python -m zoo --zoo {zoo_path} predict cli-auto-digits" in out
    assert "\r" not in err and "it/s" not in err  # piped: plain lines, no progress-bar redraws
    info = json.loads((zoo_path / "cli-auto-digits" / "transfer.json").read_text())
    assert info["strategy"] == info["advice"]["strategy"] == "shallow"


def test_cli_advise_bad_input_is_one_line(tmp_path):
    done = run_cli("transfer", "advise", str(ASSETS / "digits"), "--image-size", "4", "--zoo", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "image size 4 px is out of range" in done.stderr
