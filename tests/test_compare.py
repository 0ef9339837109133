"""compare: all four strategies on one split within a time budget, each a model that loads and predicts.

Real data and weights: 400 handwritten digits (scikit-learn) on the bundled ImageNet EfficientNet-Lite0,
at 32 px. The trainable strategies are asked for 50 epochs, far more than the budget allows, so the
budget is what ends them.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from conftest import ASSETS, run_cli
from transfer import Cancelled
from transfer.compare import compare, load_comparison
from transfer.data import load_dataset
from transfer.strategies import STRATEGIES
from zoo.predict import ModelCache, probabilities

BUDGET = 45.0


@pytest.fixture(scope="module")
def comparison(digits_small, zoo_path):
    return compare(digits_small, budget_seconds=BUDGET, image_size=32, epochs=50, batch_size=16, zoo=zoo_path,
                   name="digits-cmp")


def test_four_rows_with_real_metrics(comparison):
    rows = {row.strategy: row for row in comparison.rows}
    assert list(rows) == list(STRATEGIES)
    for row in rows.values():
        assert row.error is None and row.name == f"digits-cmp-{row.strategy}"
        assert 0.0 <= row.accuracy <= 1.0 and 0.0 <= row.macro_f1 <= 1.0 and row.seconds > 0
        assert row.image_size == 32 and row.metrics_split == "val"
    assert rows["feature-extractor"].trainable_parameters == 1280 * 10 + 10  # the new head only
    assert rows["shallow"].total_parameters < rows["feature-extractor"].total_parameters  # cut early
    assert rows["fine-tune"].trainable_parameters == rows["fine-tune"].total_parameters  # everything
    assert rows["shallow"].accuracy >= 0.5  # chance is 0.10
    preference, over_budget = comparison.advice["preference"], comparison.advice["over_budget"]
    assert preference[0] == "shallow"  # small, unlike photos (on a busy machine the budget may pass it over)
    assert comparison.advice["strategy"] == preference[len(over_budget)]  # predicted before the runs
    assert comparison.best is not None and comparison.best.accuracy == max(r.accuracy for r in rows.values())


def test_each_run_loads_and_its_metrics_are_what_the_saved_model_scores(comparison, digits_small, zoo_path):
    """The same split for every run: the saved models, reloaded, score the table's accuracy on it."""
    dataset = load_dataset(digits_small)  # same seed: the split compare used
    images = [digits_small / sample.relpath for sample in dataset.val]
    truth = torch.tensor([sample.label for sample in dataset.val])
    cache = ModelCache()
    for row in comparison.rows:
        predicted = probabilities(cache.get(row.name, zoo=zoo_path), images).argmax(1)
        accuracy = (predicted == truth).float().mean().item()
        assert accuracy == pytest.approx(row.accuracy, abs=1 / len(truth) + 1e-9), row.strategy


def test_runs_are_marked_as_siblings_of_one_comparison(comparison, zoo_path):
    names = [row.name for row in comparison.rows]
    for name in names:
        info = json.loads((zoo_path / name / "transfer.json").read_text())
        assert info["comparison"]["id"] == "digits-cmp"
        assert info["comparison"]["siblings"] == names
        assert info["comparison"]["advised"] == comparison.advice["strategy"]  # the advice, made before the runs
        assert (info["data"]["num_train"], info["data"]["num_val"]) == (comparison.num_train, comparison.num_val)


def test_rows_give_accuracy_per_second_and_the_table_marks_what_auto_would_take(comparison):
    rows = {row.strategy: row for row in comparison.rows}
    for row in rows.values():
        assert row.accuracy_per_second == pytest.approx(row.accuracy / row.seconds, rel=0.01)
    # 40 digits per class is small data: auto's staged search would stop at the better frozen run
    # (validation accuracy; a tie goes to shallow, which suits digits)
    best = max((rows["feature-extractor"], rows["shallow"]), key=lambda r: (r.val_accuracy, r.strategy == "shallow"))
    assert comparison.auto["verdict"] in ("small", "separated") and comparison.advised == best.strategy
    assert f"{best.strategy} {best.val_accuracy:.1%}" in comparison.auto["reasons"][2]
    marked = [line for line in comparison.table().splitlines() if "auto's choice" in line]
    assert len(marked) == 1 and marked[0].startswith(best.strategy)


def test_the_budget_is_shared_and_ends_the_long_runs(comparison):
    from transfer.compare import MIN_RUN_SECONDS

    rows = {row.strategy: row for row in comparison.rows}
    for row in comparison.rows:  # every share fits in what was left of the budget when the run began
        assert row.began_after + row.budget_seconds <= max(BUDGET, row.began_after + MIN_RUN_SECONDS) + 0.2
    assert rows["from-scratch"].stopped_by_budget  # it was asked for 50 epochs without early stopping


def test_a_short_budget_gives_quick_runs_what_they_need_and_splits_the_rest():
    from transfer.compare import _share

    estimates = {"feature-extractor": 5.0, "shallow": 9.0, "fine-tune": 120.0, "from-scratch": 110.0}
    order = list(estimates)
    assert _share(60, 0, "feature-extractor", order, estimates) == 5.0  # short: the quick run's own need
    assert _share(60, 14, "fine-tune", order[2:], estimates) == 23.0  # the costly runs split what is left
    assert _share(488, 0, "fine-tune", order, estimates) == 240.0  # plenty: in proportion (twice each need)
    assert _share(None, 0, "fine-tune", order, estimates) is None  # no budget: no limit


def test_table_chart_and_reload_from_the_zoo(comparison, zoo_path):
    table = comparison.table()
    assert all(name in table for name in STRATEGIES) and "auto's choice" in table
    with Image.open(comparison.chart) as chart:
        assert chart.format == "PNG" and chart.width >= 400
    saved = json.loads((comparison.folder / "comparison.json").read_text())
    assert [row["strategy"] for row in saved["rows"]] == list(STRATEGIES)
    assert saved["auto"]["strategy"] == comparison.advised and all(row["accuracy_per_second"] for row in saved["rows"])
    reloaded = load_comparison("digits-cmp", zoo=zoo_path)
    assert [(r.strategy, r.name, r.accuracy) for r in reloaded.rows] == \
           [(r.strategy, r.name, r.accuracy) for r in comparison.rows]
    assert reloaded.advised == comparison.advised


def test_cancel_keeps_the_finished_runs_only(digits_small, tmp_path):
    finished = []

    def note_saves(event) -> None:
        if event.stage == "save" and event.done == 1:
            finished.append(event.message)

    with pytest.raises(Cancelled):
        compare(digits_small, strategies=["feature-extractor", "shallow"], image_size=32, zoo=tmp_path,
                name="stopped", progress=note_saves, should_stop=lambda: bool(finished))
    assert ModelCache().get("stopped-feature-extractor", zoo=tmp_path).spec.num_classes == 10
    assert not (tmp_path / "stopped-shallow").exists()


def test_cli_compare_json(zoo_path):
    done = run_cli("transfer", "compare", str(ASSETS / "digits"), "--strategies", "feature-extractor", "shallow",
                   "--image-size", "32", "--zoo", str(zoo_path), "--name", "cli-cmp", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [row["strategy"] for row in result["rows"]] == ["feature-extractor", "shallow"]
    assert all(row["accuracy"] > 0.3 and row["name"].startswith("cli-cmp-") for row in result["rows"])
    assert result["advice"]["strategy"] in STRATEGIES and result["best"] in ("feature-extractor", "shallow")
    assert (zoo_path / "cache" / "comparisons" / "cli-cmp" / "chart.png").is_file()


def test_cli_compare_refuses_a_taken_name_before_training(tmp_path):
    (tmp_path / "taken-shallow").mkdir()
    done = run_cli("transfer", "compare", str(ASSETS / "digits"), "--zoo", str(tmp_path), "--name", "taken")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'taken-shallow' already exists" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken-shallow"]  # nothing trained, nothing saved
