"""`auto`: the decision rule as tables of cases (the prior from size and similarity; the staged search
on recorded measurements), the image-size rule, then the measurements on real data and weights.

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
    EASY_ACCURACY,
    GAIN_PER_MINUTE,
    LARGE_PER_CLASS,
    MIN_GAIN,
    SCRATCH_PER_CLASS,
    SHARE_UNSUITED,
    SHIFT_SIMILAR,
    SimilarityMeasure,
    SizeMeasure,
    StageResult,
    choose_strategy,
    keep_better,
)
from transfer.measure import SPEED_MIN_SECONDS, SPEED_RANGE, stratified_sample
from transfer.data import load_dataset
from transfer.strategies import (
    MIN_CHOSEN_SIZE,
    STRATEGIES,
    describe_image_size,
    estimate_pass_seconds,
    estimate_seconds,
    image_size_for,
)

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
    # (case, images per class, similarity, budget seconds, the prior's first, expected): no strategy
    # trained, so the quick probes stand in for the frozen strategies' scores
    ("small, similar", 30, SIMILAR, None, "feature-extractor", "feature-extractor"),
    ("small, different", 30, DIFFERENT, None, "shallow", "shallow"),
    ("small, close statistics but the deep layers do not suit", 30, DEEP_UNSUITED, None, "shallow", "shallow"),
    # the prior says shallow (far statistics), but the last layer's features score best: they win
    ("small, far statistics though the deep layers suit", 30, FAR_BUT_DEEP_SUITED, None, "shallow",
     "feature-extractor"),
    ("small, exactly at both similarity limits: the better score wins", 30, AT_THE_LIMITS, None,
     "feature-extractor", "shallow"),
    ("just below large", LARGE_PER_CLASS - 1, SIMILAR, None, "feature-extractor", "feature-extractor"),
    ("large, similar", LARGE_PER_CLASS, SIMILAR, None, "fine-tune", "fine-tune"),
    ("large, different: pretrained still the better start", 300, DIFFERENT, None, "fine-tune", "fine-tune"),
    ("very large, different", SCRATCH_PER_CLASS, DIFFERENT, None, "from-scratch", "from-scratch"),
    ("very large, similar", SCRATCH_PER_CLASS, SIMILAR, None, "fine-tune", "fine-tune"),
    ("large, but frozen features already separate the classes", 300, ALREADY_SEPARABLE, None, "fine-tune",
     "feature-extractor"),
    ("large, similar, budget too short for fine-tune", 300, SIMILAR, 60, "fine-tune", "feature-extractor"),
    ("very large, different, budget too short for training", SCRATCH_PER_CLASS, DIFFERENT, 60, "from-scratch",
     "shallow"),
    ("small, different, budget just fits shallow", 30, DIFFERENT, 9, "shallow", "shallow"),
    ("small, different, budget fits only feature-extractor", 30, DIFFERENT, 8.9, "shallow", "feature-extractor"),
    ("large, similar, budget fits everything", 300, SIMILAR, 1000, "fine-tune", "fine-tune"),
    ("nothing measurable: assume pretrained helps", 30, UNMEASURABLE, None, "feature-extractor", "feature-extractor"),
]


@pytest.mark.parametrize("case, per_class, numbers, budget, prior, expected", CASES, ids=[case[0] for case in CASES])
def test_decision_table(case, per_class, numbers, budget, prior, expected):
    choice = choose_strategy(size(per_class), similarity(numbers), ESTIMATES, budget)
    assert choice.strategy == expected, (case, choice)
    assert choice.preference[0] == prior and sorted(choice.preference) == sorted(STRATEGIES)
    assert all(not result.measured for result in choice.tried)  # predicted by the probes
    if budget is not None:
        assert ESTIMATES[choice.strategy] <= budget  # never over the budget while something fits
        assert all(ESTIMATES[name] > budget for name in choice.over_budget)


# --- the staged search, on recorded measurements ---------------------------------------------------------
# What fit(strategy="auto") measured on this project's 2-core machine (default image sizes):
# the 1,797 digits at 64 px; 1,200 images of 1-4 coloured dots on noise at 64 px ("counts": frozen
# ImageNet features plateau far below a fine-tune); the fine-tune estimates were the fits' own.
DIGITS = dict(feature_shift=0.30, stage_accuracy=(0.66, 0.80, 0.84, 0.98, 0.92), final_accuracy=0.93)
DIGITS_TRIED = (StageResult("feature-extractor", 0.950, 0.6), StageResult("shallow", 0.9861, 3.6, detail="cut after stage 3"))
COUNTS = dict(feature_shift=0.30, stage_accuracy=(0.47, 0.57, 0.65, 0.69, 0.62), final_accuracy=0.67)
COUNTS_TRIED = (StageResult("feature-extractor", 0.6833, 0.6), StageResult("shallow", 0.7375, 2.7))
COUNTS_ESTIMATES = {"feature-extractor": 3.5, "shallow": 9.4, "fine-tune": 148.9, "from-scratch": 146.5}
SIMILAR_TRIED = (StageResult("feature-extractor", 0.95, 1.0), StageResult("shallow", 0.93, 3.0))
SLOW = {**ESTIMATES, "fine-tune": 600.0, "from-scratch": 550.0}

STAGED = [
    # (case, images per class, similarity, tried, estimates, budget, expected, verdict)
    ("digits: shallow at 98.6% stops the search", 144, DIGITS, DIGITS_TRIED, ESTIMATES, None, "shallow",
     "separated"),
    ("small data stops at the best frozen result", 30, COUNTS, COUNTS_TRIED, COUNTS_ESTIMATES, None, "shallow",
     "small"),
    ("counts: frozen features plateau at 74%, the deep layers do not suit: fine-tune", 240, COUNTS, COUNTS_TRIED,
     COUNTS_ESTIMATES, None, "fine-tune", "go on"),
    ("counts, but a budget too short for fine-tune", 240, COUNTS, COUNTS_TRIED, COUNTS_ESTIMATES, 60, "shallow",
     "over budget"),
    ("similar data, 95% frozen, a 10-minute fine-tune is not worth it", 300, SIMILAR, SIMILAR_TRIED, SLOW, None,
     "feature-extractor", "not worth it"),
    ("similar data, 95% frozen, a 2-minute fine-tune is", 300, SIMILAR, SIMILAR_TRIED, ESTIMATES, None, "fine-tune",
     "go on"),
    ("very large and different: from-scratch", SCRATCH_PER_CLASS, COUNTS, COUNTS_TRIED, ESTIMATES, None,
     "from-scratch", "go on"),
    ("very large and different, from-scratch over budget: fine-tune", SCRATCH_PER_CLASS, COUNTS, COUNTS_TRIED,
     {**ESTIMATES, "from-scratch": 130.0}, 125, "fine-tune", "go on"),
    ("a measured score overrides the probes", 30, DIGITS, (StageResult("feature-extractor", 0.97, 1.0),
     StageResult("shallow", 0.96, 3.0)), ESTIMATES, None, "feature-extractor", "small"),
    ("ties go to the prior: similar data, feature-extractor", 30, SIMILAR, (StageResult("feature-extractor", 1.0),
     StageResult("shallow", 1.0)), ESTIMATES, None, "feature-extractor", "separated"),
    ("ties go to the prior: different data, shallow", 30, DIGITS, (StageResult("feature-extractor", 0.9),
     StageResult("shallow", 0.9)), ESTIMATES, None, "shallow", "small"),
    ("only feature-extractor fitted the budget", 300, COUNTS, COUNTS_TRIED[:1], ESTIMATES, 4, "feature-extractor",
     "over budget"),
]


@pytest.mark.parametrize("case, per_class, numbers, tried, estimates, budget, expected, verdict", STAGED,
                         ids=[case[0] for case in STAGED])
def test_staged_search_table(case, per_class, numbers, tried, estimates, budget, expected, verdict):
    choice = choose_strategy(size(per_class), similarity(numbers), estimates, budget, tried=tried)
    assert (choice.strategy, choice.verdict) == (expected, verdict), (case, choice.reasons)
    best = max(tried, key=lambda result: result.accuracy)
    assert choice.best_frozen in {result.strategy for result in tried}
    assert next(r.accuracy for r in tried if r.strategy == choice.best_frozen) == best.accuracy
    if verdict != "go on":
        assert choice.strategy == choice.best_frozen  # a stop keeps the best frozen result, already trained
    if budget is not None:
        assert all(estimates[name] > budget for name in choice.over_budget)
    # the advice says what was tried and what each scored
    assert all(f"{result.strategy} {result.accuracy:.1%}" in choice.reasons[2] for result in tried)


def test_the_gain_must_be_worth_the_seconds():
    """Going on needs the hoped-for share of the frozen errors to reach MIN_GAIN plus GAIN_PER_MINUTE per
    minute of the trainable strategy's estimate: the longer it takes, the more it must promise."""
    frozen_error = 1 - max(result.accuracy for result in COUNTS_TRIED)
    hoped = SHARE_UNSUITED * frozen_error
    worth = 60 * (hoped - MIN_GAIN) / GAIN_PER_MINUTE  # the longest fine-tune this gain is worth
    for seconds, verdict in ((worth - 30, "go on"), (worth + 30, "not worth it")):
        estimates = {**COUNTS_ESTIMATES, "fine-tune": seconds}
        assert choose_strategy(size(240), similarity(COUNTS), estimates, tried=COUNTS_TRIED).verdict == verdict


def test_the_reasons_say_what_was_tried_and_why_the_search_stopped_or_went_on():
    stopped = choose_strategy(size(144), similarity(DIGITS), ESTIMATES, tried=DIGITS_TRIED)
    assert len(stopped.reasons) == 4
    assert stopped.reasons[2] == ("Tried first, on one cached pass of the pretrained network: feature-extractor 95.0% "
                                  "(1 s), shallow 98.6% (cut after stage 3, 4 s) on validation images.")
    assert "at 98.6% the pretrained features already separate" in stopped.reasons[3]
    went_on = choose_strategy(size(240), similarity(COUNTS), COUNTS_ESTIMATES, tried=COUNTS_TRIED)
    assert went_on.reasons[3].startswith("So: fine-tune") and "shallow at 73.8%" in went_on.reasons[3]
    assert "keeps whichever of the two scores better" in went_on.reasons[3]
    predicted = choose_strategy(size(144), similarity(DIGITS), ESTIMATES)
    assert "A quick test of the frozen network's features predicts" in predicted.reasons[2]


@pytest.mark.parametrize("trained_accuracy, kept", [(0.85, "fine-tune"), (0.7375, "shallow"), (0.70, "shallow")])
def test_the_trained_model_is_kept_only_when_it_beats_the_best_frozen_one(trained_accuracy, kept):
    choice = choose_strategy(size(240), similarity(COUNTS), COUNTS_ESTIMATES, tried=COUNTS_TRIED)
    strategy, sentence = keep_better(choice, StageResult("fine-tune", trained_accuracy, 75.7))
    assert strategy == kept  # a tie keeps the frozen one: as good, and cheaper
    assert f"fine-tune reached {trained_accuracy:.1%}" in sentence and f"the {kept} model is kept" in sentence


def test_a_budget_shorter_than_every_estimate_says_so_and_picks_the_quickest():
    choice = choose_strategy(size(300), similarity(SIMILAR), ESTIMATES, budget_seconds=3)
    assert choice.strategy == "feature-extractor" and [r.strategy for r in choice.tried] == ["feature-extractor"]
    assert choice.over_budget == ("fine-tune",)
    assert "No strategy fits your 3 s budget" in choice.reasons[-1]


def test_skipping_for_the_budget_is_explained_with_the_estimates():
    choice = choose_strategy(size(300), similarity(SIMILAR), ESTIMATES, budget_seconds=60)
    assert choice.over_budget == ("fine-tune",)
    assert "fine-tune (about 2 min)" in choice.reasons[-1] and "60 s budget" in choice.reasons[-1]


def test_reasons_are_four_plain_sentences_with_the_numbers():
    choice = choose_strategy(size(30), similarity(DIFFERENT), ESTIMATES)
    assert len(choice.reasons) == 4 and all(reason.endswith(".") for reason in choice.reasons)
    size_reason, similarity_reason, tried_reason, choice_reason = choice.reasons
    assert "feature-extractor 88.0%, shallow 95.0%" in tried_reason
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


# --- the input size, chosen from the images --------------------------------------------------------------

SIZES = [
    # (strategy, asked for, backbone's native size, images' median shorter side, expected)
    ("shallow", None, 224, 8, MIN_CHOSEN_SIZE),  # 8x8 digits: enlarged only to the smallest sensible size
    ("fine-tune", None, 224, 8, MIN_CHOSEN_SIZE),
    ("feature-extractor", None, 224, 96, 96),  # about their own size
    ("feature-extractor", None, 224, 100, 96),  # ... a multiple of the 32 px stride
    ("feature-extractor", None, 224, 3000, 224),  # 12-megapixel photos: the backbone's own size
    ("fine-tune", None, 224, 3000, 128),  # ... 128 px when every layer trains (CPU time)
    ("feature-extractor", 40, 224, 3000, 40),  # asked for: as asked
    ("feature-extractor", None, 224, None, 224),  # sides unknown: the strategy's default
    ("fine-tune", None, 224, None, 128),
    ("feature-extractor", None, 32, 8, 32),  # a zoo model made at 32 px: never above its own size
]


@pytest.mark.parametrize("strategy, requested, native, median_side, expected", SIZES)
def test_image_size_is_chosen_from_the_images(strategy, requested, native, median_side, expected):
    assert image_size_for(strategy, requested, native, median_side) == expected


def test_the_image_size_reason_says_which_size_and_why(digits_small):
    assert load_dataset(digits_small).median_side == 8  # from the headers
    digits = {name: image_size_for(name, None, 224, 8) for name in STRATEGIES}
    assert describe_image_size(digits, None, 8).startswith(
        "Your images are about 8 px on their shorter side (median), so they are read at 64 px: enlarged")
    photos = {name: image_size_for(name, None, 224, 3000) for name in STRATEGIES}
    reason = describe_image_size(photos, None, 3000)
    assert "224 px for the frozen strategies and 128 px when the whole network trains: shrunk" in reason
    assert describe_image_size({"shallow": 40}, 40, 3000) == "The images are read at 40 px, as you asked."


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
    assert f"shift {measured['feature_shift']:.2f}" in photos.reasons[2]  # after the size and the image size


def test_small_digits_get_shallow_because_they_look_unlike_photos(advice):
    digits, photos = advice["digits"], advice["photos"]
    assert digits.strategy == "shallow", digits.reasons
    measured = digits.similarity
    assert not measured["similar"]
    assert measured["feature_shift"] > SHIFT_SIMILAR > photos.similarity["feature_shift"]
    assert measured["depth_gain"] < -DEPTH_MARGIN  # an earlier stage separates digits better than the last
    assert measured["best_stage"] is not None and measured["best_stage"] < len(measured["stage_accuracy"])
    assert "look unlike" in digits.reasons[2]


def test_large_data_is_probed_on_a_sample_and_the_budget_is_respected(digits_dir, zoo_path):
    """1,797 digits (about 144 per class): large and unlike photos, so the prior is fine-tune, and the
    quick probes stand in for the frozen scores; with a budget too short for fine-tune, the best
    frozen strategy that fits, and the advice says why."""
    unlimited = advise(digits_dir, image_size=64, zoo=zoo_path)
    assert unlimited.size["size_class"] == "large" and unlimited.preference[0] == "fine-tune", unlimited.reasons
    assert unlimited.similarity["probe_images"] == 500 and not unlimited.similarity["similar"]
    # the choice follows from its own numbers: go on only when the hoped-for gain is worth fine-tune's time
    best = max(result["accuracy"] for result in unlimited.tried)
    if best >= EASY_ACCURACY:
        assert unlimited.verdict == "separated" and unlimited.strategy == unlimited.best_frozen == "shallow"
    else:
        worth = SHARE_UNSUITED * (1 - best) >= MIN_GAIN + GAIN_PER_MINUTE * unlimited.estimated_seconds["fine-tune"] / 60
        assert unlimited.strategy == ("fine-tune" if worth else "shallow"), unlimited.reasons
    budget = (unlimited.estimated_seconds["shallow"] + unlimited.estimated_seconds["fine-tune"]) / 2
    hurried = advise(digits_dir, image_size=64, zoo=zoo_path, budget_seconds=budget)
    assert hurried.strategy == "shallow" and hurried.over_budget == ([] if best >= EASY_ACCURACY else ["fine-tune"])
    assert hurried.estimated_seconds["shallow"] <= budget < hurried.estimated_seconds["fine-tune"]
    assert best >= EASY_ACCURACY or "exceeds your" in hurried.reasons[-1]
    assert hurried.similarity == unlimited.similarity


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
    """auto tries feature-extractor and shallow on one cached pass, and keeps the better (here a tie,
    which goes to the one that suits photos): nothing is trained twice."""
    from zoo.predict import ModelCache, predict

    from transfer.fit import fit

    events = []
    result = fit(photos_small, strategy="auto", image_size=PHOTO_SIZE, zoo=fresh_zoo, name="photos-auto",
                 progress=events.append)
    computed = [e for e in events if e.stage == "features" and e.message == "computing features" and e.done == e.total]
    assert len(computed) == 1  # the advice's pass; both frozen fits read the cache
    assert sum(e.stage == "features" and e.message == "features from the cache" for e in events) == 2
    assert result.strategy == result.advice["strategy"] == "feature-extractor"
    info = json.loads((result.path / "transfer.json").read_text())
    assert info["strategy"] == "feature-extractor"
    advice = info["advice"]
    assert advice["strategy"] == "feature-extractor" and len(advice["reasons"]) == 5
    assert advice["verdict"] in ("separated", "small")  # small photos: the search stops at a frozen strategy
    assert [(t["strategy"], t["measured"]) for t in advice["tried"]] == [("feature-extractor", True), ("shallow", True)]
    assert result.val_accuracy == max(t["accuracy"] for t in advice["tried"])  # the best frozen result is kept
    assert advice["similarity"]["feature_shift"] == result.advice["similarity"]["feature_shift"]
    assert advice["image_sizes"]["feature-extractor"] == PHOTO_SIZE and "as you asked" in advice["reasons"][1]
    assert result.metrics["accuracy"] >= 0.9
    top = predict("photos-auto", [photos_small / "cat" / "00.jpg"], top_k=1, zoo=fresh_zoo, cache=ModelCache())
    assert top[0][0]["label"] == "cat"


def test_auto_that_goes_on_reuses_its_head_and_keeps_the_better_model(digits_small, zoo_path, monkeypatch):
    """With the thresholds set so that 40 digits per class count as large and nothing stops the search,
    auto goes on to fine-tune: its warm-up is feature-extractor's head (no second warm-up), and the
    model kept is never worse on validation data than the best frozen one."""
    import transfer.decide as decide
    from transfer.fit import fit

    for threshold, value in (("LARGE_PER_CLASS", 10), ("EASY_ACCURACY", 1.01), ("MIN_GAIN", 0.0),
                             ("GAIN_PER_MINUTE", 0.0)):
        monkeypatch.setattr(decide, threshold, value)
    events = []
    result = fit(digits_small, strategy="auto", image_size=32, epochs=1, batch_size=16, zoo=zoo_path,
                 name="auto-went-on", progress=events.append)
    advice = result.advice
    assert advice["verdict"] == "go on"
    tried = {t["strategy"]: t for t in advice["tried"]}
    assert list(tried) == ["feature-extractor", "shallow", "fine-tune"]
    assert tried["fine-tune"]["detail"] == "warm-up: feature-extractor's head"
    assert not any(e.stage == "warm-up" for e in events)  # phase 1 was not run again
    best_frozen = max(tried["feature-extractor"]["accuracy"], tried["shallow"]["accuracy"])
    assert result.val_accuracy == max(best_frozen, tried["fine-tune"]["accuracy"])
    kept = "fine-tune" if tried["fine-tune"]["accuracy"] > best_frozen else advice["best_frozen"]
    assert result.strategy == advice["strategy"] == kept
    assert f"the {kept} model is kept" in advice["reasons"][-1]
    assert json.loads((result.path / "transfer.json").read_text())["strategy"] == kept


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
    assert len(result["reasons"]) == 5 and result["budget_seconds"] == 120 and result["verdict"] == "small"
    assert [(t["strategy"], t["measured"]) for t in result["tried"]] == [
        ("feature-extractor", False), ("shallow", False)]  # predicted by the quick probes: advise trains nothing
    assert result["image_sizes"]["shallow"] == 64 and result["median_side"] == 8


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
