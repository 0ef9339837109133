"""The Compare strategies tab: all four strategies on the Fine-tune tab's upload, one split, one time
budget (`transfer.compare`), the table filling in run by run, then a chart; every run is a model in
the zoo. It runs like a fit (`ui.runs`): live status, Cancel, and the finished runs stay."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from transfer.compare import compare
from ui import runs
from ui.config import AppConfig, app_config, require_backbone_allowed
from ui.gpu import fit_seconds, on_gpu
from ui.handlers import INTERNAL, TRAINING, friendly_errors
from ui.predict_tab import PredictTab
from ui.settings import (
    backbone_setting,
    budget_setting,
    image_size_setting,
    model_name_setting,
)
from ui.train_tab import TrainTab, after_training
from ui.uploads import open_upload
from ui.views import duration, stage_label, stage_unit
from ui.zoo_tab import ZooTab

COMPARE_COLUMNS = ["strategy", "accuracy", "macro-F1", "seconds", "trainable parameters", "model", "note"]


def _gpu_seconds(zip_path, backbone, budget_seconds, *_, **__) -> int:
    """ZeroGPU: the GPU time a comparison within this budget asks for (`ui.gpu`)."""
    try:
        budget = budget_setting(budget_seconds)
    except gr.Error:
        budget = None
    return fit_seconds(None, app_config().time_budget(budget))


@on_gpu(_gpu_seconds)
@friendly_errors
def compare_strategies(zip_path: str | None, backbone: str, budget_seconds, image_size, name: str,
                       run: runs.TrainingRun | None, profile: gr.OAuthProfile | None, progress=gr.Progress()):
    """All four strategies on the uploaded zip, in a run's thread so Cancel (and closing the page)
    stops it; the runs that finished stay.

    Yields (status, summary, table, chart PNG path, run, the best model's name)."""
    config = app_config()
    backbone = backbone_setting(backbone)
    require_backbone_allowed(backbone, "compare", profile, config)
    budget = config.time_budget(budget_setting(budget_seconds))
    size, name = image_size_setting(image_size), model_name_setting(name)
    dataset = open_upload(zip_path, config)
    run = runs.claim(run)
    if run is None:  # cancelled while waiting in the queue
        yield "**Cancelled** before it started. Nothing was saved.", "", gr.skip(), gr.skip(), None, None
        return
    started = time.monotonic()
    run.start(compare, data=dataset, backbone=backbone, budget_seconds=budget, image_size=size, name=name)
    progress(0, desc="Measuring the data (auto's advice)")
    yield "**Starting…**", "", gr.skip(), gr.skip(), run, None
    current, announced, shown, finished = "auto's advice", None, time.monotonic(), []
    for reports in runs.follow(run):
        grown = False
        for event in reports:
            if event.stage == "compare" and event.done < event.total:
                current = event.message
            if event.stage == "compare-row":  # a run finished: its row shows at once
                finished.append(event.metrics)
                grown = True
        reports = [event for event in reports if event.stage != "compare-row"]
        if reports:
            last = reports[-1]
            if last.stage == "compare":
                progress((last.done, max(last.total, 1)), desc=f"Comparing: {last.message}", unit="runs")
            else:
                progress((last.done, max(last.total, 1)), desc=f"{current}: {stage_label(last.stage)}",
                         unit=stage_unit(last.stage))
        # the status when a run starts or finishes, and once a second in between
        if grown or current != announced or time.monotonic() - shown > 1.0:
            yield (f"**Running {current}** · {time.monotonic() - started:.0f} s elapsed", "",
                   partial_frame(finished) if grown else gr.skip(), *[gr.skip()] * 3)
            announced, shown = current, time.monotonic()
    comparison = runs.outcome(run)
    if comparison is None:
        yield ("**Cancelled.** The runs that had finished are in the zoo; nothing of the one that was running "
               "was saved.", "", gr.skip(), gr.skip(), None, None)
        return
    yield ("**Done.**", comparison_summary(comparison), comparison_frame(comparison),
           str(comparison.chart) if comparison.chart else None, None,
           comparison.best.name if comparison.best else None)


@friendly_errors
def cancel_compare(run: runs.TrainingRun | None) -> str:
    return runs.cancel(run, "No comparison is running right now.",
                       "**Stopping…** (the runs that finished stay in the zoo)")


def comparison_frame(comparison) -> pd.DataFrame:
    best = comparison.best
    rows = []
    for row in comparison.rows:
        notes = [note for note, applies in (("auto's choice", row.strategy == comparison.advised),
                                            ("best", best is not None and row is best),
                                            ("stopped by budget", row.stopped_by_budget)) if applies]
        rows.append({"strategy": row.strategy, "accuracy": None if row.accuracy is None else round(row.accuracy, 4),
                     "macro-F1": None if row.macro_f1 is None else round(row.macro_f1, 4),
                     "seconds": round(row.seconds, 1), "trainable parameters": row.trainable_parameters,
                     "model": row.name or "", "note": f"failed: {row.error}" if row.error else ", ".join(notes)})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def partial_frame(finished: list[dict]) -> pd.DataFrame:
    """The rows of the runs that finished so far (the full table, with its notes, comes at the end)."""
    rows = [{"strategy": row["strategy"], "accuracy": row["accuracy"], "macro-F1": row["macro_f1"],
             "seconds": row["seconds"], "trainable parameters": row["trainable_parameters"],
             "model": row["model"] or "", "note": f"failed: {row['error']}" if row["error"] else ""}
            for row in finished]
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def comparison_summary(comparison) -> str:
    best, budget = comparison.best, comparison.budget_seconds
    split = "test" if comparison.num_test else "validation"
    return (f"**{comparison.id}**: {comparison.dataset}, the same split for every run ({comparison.num_train} "
            f"train / {comparison.num_val} val / {comparison.num_test} test images; {split} metrics), "
            f"{comparison.seconds:.0f} s in all"
            + (f" within a {duration(budget)} budget." if budget else ", no time budget.")
            + (f" Auto would choose **{comparison.advised}**." if comparison.advised else "")
            + (f" Best here: **{best.strategy}** ({best.accuracy:.1%})." if best else "")
            + " Each run is a model in the zoo.")


def compare_dataset_text(facts: dict | None) -> str:
    if not facts:
        return "No dataset yet: upload one (or try the example) in the Fine-tune tab."
    return (f"Dataset: **{facts['name']}**, {len(facts['classes'])} classes, {facts['num_train']} training / "
            f"{facts['num_eval']} evaluation images (from the Fine-tune tab).")


@friendly_errors
def after_compare(best: str | None, query: str):
    """The zoo lists the comparison's models everywhere (the best one selected); buttons back."""
    return (*after_training(best, query)[:6], gr.update(interactive=True), gr.update(interactive=False),
            gr.update(visible=False), None)


def compare_started():
    """Compare greys out, its Cancel lights up, the run exists at once (see `train_tab.training_started`)."""
    return gr.update(interactive=False), gr.update(interactive=True), gr.update(visible=True), runs.TrainingRun()


# --- layout and wiring -----------------------------------------------------------------------------


def build(demo: gr.Blocks, config: AppConfig, train: TrainTab, zoo: ZooTab, predict: PredictTab) -> None:
    run_state = gr.State(None, delete_callback=runs.stop_run)  # a comparison, apart from a fit
    best_state = gr.State(None)  # the best model of the last comparison
    with gr.Tab("Compare strategies", id="compare"):
        gr.Markdown("Train all four strategies on the dataset uploaded in the **Fine-tune** tab (with its "
                    "backbone), on the same split and within one time budget, to see which suits it. "
                    "Every run is saved in the zoo as `NAME-STRATEGY`.")
        with gr.Row():
            budget = gr.Number(label="Time budget for all four (seconds)", value=min(120, config.max_train_seconds or 120),
                               minimum=0, elem_id="compare-budget",
                               info="0: none" + (f" (this app allows at most {config.max_train_seconds:.0f} s)"
                                                 if config.max_train_seconds else ""))
            size = gr.Number(label="Image size (px)", value=0, precision=0, minimum=0,
                             elem_id="compare-image-size", info="0: each strategy's default")
            name = gr.Textbox(label="Comparison name", elem_id="compare-name", placeholder="empty: DATASET-DATE-TIME")
        dataset = gr.Markdown(compare_dataset_text(None), elem_id="compare-dataset")
        with gr.Row():
            compare_button = gr.Button("Compare strategies", variant="primary", elem_id="compare-button", scale=3)
            cancel_button = gr.Button("Cancel", variant="stop", interactive=False, elem_id="compare-cancel", scale=1)
        progress_area = gr.Markdown(visible=False, elem_id="compare-progress")  # gr.Progress bar
        status = gr.Markdown(elem_id="compare-status")
        summary = gr.Markdown(elem_id="compare-summary")
        table = gr.Dataframe(value=pd.DataFrame(columns=COMPARE_COLUMNS), interactive=False,
                             label="Strategies side by side", elem_id="compare-table", wrap=True)
        chart = gr.Image(label="Accuracy and macro-F1", type="filepath", interactive=False, elem_id="compare-chart",
                         height=280)

    train.facts.change(compare_dataset_text, train.facts, dataset, api_name="compare_dataset", **INTERNAL)
    compare_button.click(
        compare_started, None, [compare_button, cancel_button, progress_area, run_state],
        api_name="lock_compare", queue=False, **INTERNAL,
    ).then(
        compare_strategies, [train.dataset_file, train.backbone, budget, size, name, run_state],
        [status, summary, table, chart, run_state, best_state],
        api_name="compare", show_progress_on=[progress_area], **TRAINING,
    ).then(
        after_compare, [best_state, zoo.query],
        [zoo.table, predict.model, zoo.model, zoo.card, predict.text, train.backbone, compare_button, cancel_button,
         progress_area, run_state],
        api_name="after_compare", **INTERNAL,
    )
    cancel_button.click(cancel_compare, run_state, status, api_name="cancel_compare", queue=False)
