"""The Fine-tune tab: upload a zip (or try the example), see what it holds and what auto advises,
train with a live progress bar and curves, cancel, and read the results; the new model is then
selected everywhere.

The strategy is "auto" by default: after each upload (and settings change) `advise_upload` runs
`transfer.advise` and shows its choice, reasons and measured numbers; the fit then runs with
strategy="auto", whose advice reads the same cached measurements. Training runs `transfer.fit` in a
`ui.runs.TrainingRun` (progress, cancel, queue).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from transfer.fit import fit
from transfer.progress import Progress
from transfer.strategies import STRATEGIES, estimate_seconds
from ui import drilldown, runs
from ui.config import AppConfig, app_config, require_backbone_allowed
from ui.gpu import fit_seconds, on_gpu
from ui.handlers import INTERNAL, TRAINING, friendly_errors
from ui.predict_tab import PredictTab, model_inputs
from ui.settings import (
    AUTO,
    FitSettings,
    balance_setting,
    backbone_facts,
    backbone_setting,
    budget_setting,
    describe_strategy,
    epochs_setting,
    image_size_setting,
    strategy_choices,
)
from ui.uploads import (
    counts_frame,
    example_dataset_zip,
    open_target,
    open_upload,
    summary_text,
    thumbnails,
)
from ui.views import (
    LOSS_COLOURS,
    SPLIT_COLOURS,
    TrainingCurve,
    advice_text,
    confusion_table,
    duration,
    per_class_frame,
    results_text,
    stage_label,
    stage_unit,
    status_text,
)
from ui.zoo_tab import ZooTab, model_card, model_names, zoo_rows
from zoo.catalog import list_entries
from zoo.weights import BUNDLED, DEFAULT_BACKBONE

# --- the dataset ------------------------------------------------------------------------------------


@friendly_errors
def use_example_dataset() -> str:
    return example_dataset_zip()


@friendly_errors
def inspect_dataset(zip_path: str | None):
    """What the upload holds, before any training: summary, class counts, thumbnails, problems."""
    if not zip_path:
        return "", None, [], gr.update(value=None, visible=False), None
    dataset = open_upload(zip_path, app_config())
    facts = {"name": dataset.name, "upload": zip_path, "num_train": len(dataset.train),
             "num_eval": len(dataset.val) + len(dataset.test), "classes": list(dataset.classes),
             "median_side": dataset.median_side}
    skipped = pd.DataFrame([{"file": file, "reason": reason} for file, reason in dataset.skipped[:500]],
                           columns=["file", "reason"])
    return (summary_text(dataset), counts_frame(dataset), thumbnails(dataset),
            gr.update(value=skipped, visible=bool(dataset.skipped)), facts)


# --- settings, advice and estimate -----------------------------------------------------------------


def image_backbones() -> list[str]:
    """Backbones offered for a fine-tune: bundled ImageNet weights, then image-only zoo models."""
    names = list(BUNDLED)
    for entry in list_entries():
        summary = entry.summary()
        if not entry.damaged and not summary["takes_text"] and entry.name not in BUNDLED:
            names.append(f"zoo:{entry.name}")
    return names


def backbone_choices():
    return gr.update(choices=image_backbones())


@friendly_errors
def estimate_text(facts: dict | None, backbone: str, strategy: str, image_size, epochs,
                  advice: dict | None = None) -> str:
    """How long the fit should take, from the measured cost model in `transfer.strategies` (for auto:
    the advised strategy's estimate, which allows for this machine's measured speed)."""
    if not facts or strategy not in strategy_choices():
        return "Load a dataset to see how long training will take."
    try:
        size, passes = image_size_setting(image_size), epochs_setting(epochs)
    except gr.Error:
        return "Fix the settings to see an estimate."
    which = ""
    if strategy == AUTO:
        if not advice or advice.get("upload") != facts.get("upload"):
            return "Auto is measuring the data; the estimate follows with its advice."
        strategy = advice["strategy"]
        seconds = advice["estimated_seconds"][strategy]
        which = f" (auto's choice, {strategy}, at this machine's measured speed)"
    else:
        architecture, native = backbone_facts(backbone_setting(backbone))
        seconds = estimate_seconds(strategy, num_train=facts["num_train"], num_eval=facts["num_eval"],
                                   image_size=size, epochs=passes, architecture=architecture, native_size=native,
                                   median_side=facts.get("median_side"))
    text = (f"Estimated time{which}: about **{duration(seconds)}**" + ("" if which else " on a 2-core CPU")
            + f" for {facts['num_train']} training and {facts['num_eval']} evaluation images.")
    if not STRATEGIES[strategy].trains_backbone:
        text += " A repeat on the same images is faster: their features are cached."
    cap = app_config().max_train_seconds
    if cap and seconds > cap:
        text += f" This app stops every fit after {duration(cap)}, keeping the best epoch so far."
    return text


@friendly_errors
def advise_upload(zip_path: str | None, backbone: str, image_size, epochs, max_seconds, strategy: str = AUTO,
                  profile: gr.OAuthProfile | None = None, progress=gr.Progress()):
    """What auto chooses for the upload and why (`transfer.advise`), within this app's time budget.

    Runs after every new upload and settings change while the strategy is auto (a strategy picked by
    hand needs no advice, and 2 CPU cores are better spent elsewhere); its frozen pass fills the
    feature cache that a frozen fit then reads. Returns (the advice box, the advice for the estimate
    and the fit)."""
    from transfer.advise import advise

    if not zip_path or strategy != AUTO:
        return gr.update(value="", visible=False), None
    config = app_config()
    backbone = backbone_setting(backbone)
    require_backbone_allowed(backbone, "measure the data", profile, config)
    try:
        size, passes, budget = image_size_setting(image_size), epochs_setting(epochs), budget_setting(max_seconds)
    except gr.Error as error:
        return gr.update(value=f"Auto's advice waits for valid settings: {error.message}", visible=True), None
    dataset = open_upload(zip_path, config)

    def report(event: Progress) -> None:
        progress((event.done, max(event.total, 1)), desc=f"Advice: {stage_label(event.stage)}",
                 unit=stage_unit(event.stage))

    advice = advise(dataset, backbone=backbone, image_size=size, epochs=passes,
                    budget_seconds=config.time_budget(budget), progress=report)
    facts = {"upload": zip_path, "dataset": dataset.name, "strategy": advice.strategy,
             "estimated_seconds": advice.estimated_seconds, "reasons": advice.reasons}
    return gr.update(value=advice_text(advice), visible=True), facts


# --- training -----------------------------------------------------------------------------------------


def _fit_estimate(settings: FitSettings, dataset) -> float | None:
    if settings.strategy == AUTO:
        return None  # the advice inside the fit estimates it
    architecture, native = backbone_facts(settings.backbone)
    return estimate_seconds(settings.strategy, num_train=len(dataset.train), num_eval=len(dataset.val) + len(dataset.test),
                            image_size=settings.image_size, epochs=settings.epochs, architecture=architecture,
                            native_size=native, median_side=dataset.median_side)


def _check_name_free(name: str | None) -> None:
    if name and name in {entry.name for entry in list_entries()}:
        raise gr.Error(f"A model named '{name}' is already in the zoo; choose another name "
                       "(or leave the name empty for an automatic one).")


def _gpu_seconds(zip_path, backbone, strategy, name, image_size, epochs, batch_size, max_seconds, *_, **__) -> int:
    """ZeroGPU: the GPU time a fit with these settings asks for (`ui.gpu`)."""
    config = app_config()
    try:
        settings = FitSettings.from_widgets(backbone, strategy, name, image_size, epochs, batch_size, max_seconds)
    except gr.Error:  # bad settings: the handler itself says so, at once
        return fit_seconds(None, config.max_train_seconds)
    try:
        estimate = _fit_estimate(settings, open_upload(zip_path, config))
    except Exception:  # no usable upload: the handler says why
        estimate = None
    return fit_seconds(estimate, config.time_budget(settings.max_seconds))


@on_gpu(_gpu_seconds)
@friendly_errors
def train_model(zip_path, backbone, strategy, name, image_size, epochs, batch_size, max_seconds,
                target_zip: str | None = None, balance: str = "auto", run: runs.TrainingRun | None = None,
                profile: gr.OAuthProfile | None = None, progress=gr.Progress()):
    """Fine-tune on the uploaded zip, yielding live status and curve; saves to the zoo at the end.

    target_zip: images from where the model will be used (the fit adapts to them when they look
    different); balance: how lopsided classes are handled (`transfer.balance`).
    run: the page's run, made when Train was clicked (so Cancel works while the fit waits in the
    queue); API calls come without one. Yields (status, accuracy plot, loss plot, results,
    per-class table, confusion matrix, run, trained name)."""
    config = app_config()
    settings = FitSettings.from_widgets(backbone, strategy, name, image_size, epochs, batch_size, max_seconds)
    require_backbone_allowed(settings.backbone, "fine-tune", profile, config)
    dataset = open_upload(zip_path, config)
    _check_name_free(settings.name)
    estimate = _fit_estimate(settings, dataset)
    hidden = gr.update(value=None, visible=False)
    run = runs.claim(run)
    if run is None:  # cancelled while waiting in the queue
        yield "**Cancelled.** Nothing was saved.", None, None, "", hidden, hidden, None, None
        return
    curve, started = TrainingCurve(), time.monotonic()
    run.start(fit, data=dataset, backbone=settings.backbone, strategy=settings.strategy, name=settings.name,
              epochs=settings.epochs, image_size=settings.image_size, batch_size=settings.batch_size,
              max_seconds=config.time_budget(settings.max_seconds), target_domain=open_target(target_zip, config),
              balance=balance_setting(balance))
    progress(0, desc="Starting")
    yield status_text(None, started, estimate), None, None, "", hidden, hidden, run, None
    last, shown, new_points = None, time.monotonic(), False
    for reports in runs.follow(run):
        for event in reports:
            new_points |= curve.add(event)
        if reports:
            last = reports[-1]
            progress((last.done, max(last.total, 1)), desc=stage_label(last.stage), unit=stage_unit(last.stage))
        since = time.monotonic() - shown
        if (new_points and since > 0.4) or since > 1.0:  # a head on cached features does 50 epochs a second
            plots = curve.plots() if new_points else (gr.skip(), gr.skip())
            yield status_text(last, started, estimate), *plots, *[gr.skip()] * 5
            shown, new_points = time.monotonic(), False
    result = runs.outcome(run)
    if result is None:
        yield "**Cancelled.** Nothing was saved.", *curve.plots(), "", hidden, hidden, None, None
        return
    yield (f"**Saved as `{result.name}`** in {result.train_seconds:.1f} s. It is selected in the Predict tab.",
           *curve.plots(), results_text(result), gr.update(value=per_class_frame(result.metrics), visible=True),
           gr.update(value=confusion_table(result.classes, result.metrics["confusion_matrix"]), visible=True),
           None, result.name)


@friendly_errors
def cancel_training(run: runs.TrainingRun | None) -> str:
    return runs.cancel(run, "Nothing is training right now.",
                       "**Stopping…** (within a batch or two; nothing will be saved)")


def training_started():
    """Train greys out, Cancel lights up, the progress bar and the curves appear (`after_training`
    undoes it), and the run exists at once, so Cancel works while it waits in the queue."""
    return (gr.update(interactive=False), gr.update(interactive=True), gr.update(visible=True),
            gr.update(visible=True), runs.TrainingRun())


@friendly_errors
def after_training(trained: str | None, query: str):
    """Refresh the zoo everywhere and select the new model in Predict and in the Zoo tab.

    The card and the text box are set here too: the other tabs are not on screen, so their own
    change events do not run."""
    names = model_names()
    table = zoo_rows(query)
    if trained in names:
        card, text_box = model_card(trained), model_inputs(trained)
    else:  # cancelled or failed: keep every selection
        trained, card, text_box = None, gr.skip(), gr.skip()

    def pick():  # one update per dropdown: gradio consumes an update's value
        return gr.update(choices=names, value=trained) if trained else gr.update(choices=names)

    return (table, pick(), pick(), card, text_box, gr.update(choices=image_backbones()),
            gr.update(interactive=True), gr.update(interactive=False), gr.update(visible=False), None)


# --- layout and wiring -----------------------------------------------------------------------------


@dataclass
class TrainTab:
    """What the Compare tab shares: the upload, its facts and the backbone."""

    dataset_file: gr.File
    backbone: gr.Dropdown
    facts: gr.State


def build(demo: gr.Blocks, config: AppConfig, zoo: ZooTab, predict: PredictTab) -> TrainTab:
    run_state = gr.State(None, delete_callback=runs.stop_run)
    facts_state = gr.State(None)
    advice_state = gr.State(None)  # the advice for the current upload and settings (advise_upload)
    trained_state = gr.State(None)
    with gr.Tab("Fine-tune", id="fine-tune"):
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("### 1. Data\nA **.zip** of one folder per class (`cats/…`, `dogs/…`), "
                            "or with `train/`, `val/` (and `test/`) folders around them.")
                dataset_file = gr.File(label="Dataset (.zip)", file_types=[".zip"], elem_id="dataset-zip")
                example_button = gr.Button("Try the example dataset (handwritten digits)", elem_id="example-dataset")
                target_file = gr.File(label="Target-domain images (.zip, optional)", file_types=[".zip"],
                                      elem_id="target-zip", height=90)
                gr.Markdown("Unlabelled pictures from where the model will be used (another camera, season, "
                            "hospital): the fit adapts to them when they look different.", elem_id="target-note")
                gr.Markdown("### 2. Settings")
                backbone = gr.Dropdown(label="Backbone", choices=list(BUNDLED), value=DEFAULT_BACKBONE,
                                       allow_custom_value=True,
                                       info="Bundled ImageNet weights (offline), a zoo model (zoo:NAME), "
                                            "or any timm name (downloads; needs the internet)")
                strategy = gr.Radio(strategy_choices(), value=AUTO, label="Strategy", elem_id="strategy")
                strategy_note = gr.Markdown(describe_strategy(AUTO))
                advice = gr.Markdown(visible=False, elem_id="advice")  # transfer.advise fills this
                model_name = gr.Textbox(label="Model name", elem_id="model-name",
                                        placeholder="empty: DATASET-STRATEGY-DATE")
                with gr.Accordion("More settings", open=False, elem_id="more-settings"):
                    image_size = gr.Number(label="Image size (px)", value=0, precision=0, minimum=0,
                                           elem_id="image-size", info="0: chosen from the images (their median side, "
                                           "at least 64 px, at most the backbone's own 224 px; 128 px when all layers train)")
                    epochs = gr.Number(label="Epochs", value=0, precision=0, minimum=0, elem_id="epochs",
                                       info="0: the strategy's default")
                    batch_size = gr.Slider(2, 128, value=32, step=1, label="Batch size")
                    balance = gr.Radio(["auto", "weights", "resample", "none"], value="auto", elem_id="balance",
                                       label="Lopsided classes", info="auto: class weights from 1.5:1")
                    max_seconds = gr.Number(label="Time budget (seconds)", value=0, minimum=0, elem_id="max-seconds",
                                            info="0: none" + (f" (this app stops every fit after "
                                                              f"{config.max_train_seconds:.0f} s)"
                                                              if config.max_train_seconds else ""))
                estimate = gr.Markdown("Load a dataset to see how long training will take.", elem_id="estimate")
                with gr.Row():
                    train_button = gr.Button("Train", variant="primary", elem_id="train-button")
                    cancel_button = gr.Button("Cancel", variant="stop", interactive=False, elem_id="cancel-button")
            with gr.Column(scale=2):
                summary = gr.Markdown(elem_id="dataset-summary")
                counts_plot = gr.BarPlot(None, x="class", y="images", color="split", color_map=SPLIT_COLOURS,
                                         height=220, elem_id="class-counts",
                                         label="Images per class: training (blue), validation (orange), test (green)")
                thumbs = gr.Gallery(label="A few images per class", columns=8, height=240, object_fit="contain",
                                    allow_preview=False, elem_id="thumbnails")
                skipped = gr.Dataframe(label="Skipped files", visible=False, interactive=False, max_height=200)
                progress_area = gr.Markdown(visible=False, elem_id="train-progress")  # gr.Progress bar
                status = gr.Markdown(elem_id="train-status")
                with gr.Row(visible=False) as curves:
                    accuracy_plot = gr.LinePlot(None, x="epoch", y="value", label="Validation accuracy",
                                                x_title="epoch (all phases)", y_title="accuracy", y_lim=[0, 1],
                                                height=260, elem_id="accuracy-curve")
                    loss_plot = gr.LinePlot(None, x="epoch", y="value", color="metric", color_map=LOSS_COLOURS,
                                            label="Loss: training (blue), validation (orange)",
                                            x_title="epoch (all phases)", y_title="loss", height=260,
                                            elem_id="loss-curve")
                results = gr.Markdown(elem_id="results")
                with gr.Row():
                    per_class = gr.Dataframe(label="Per class", interactive=False, max_height=360, visible=False,
                                             elem_id="per-class")
                    confusion = gr.Dataframe(label="Confusion matrix (rows: true class)", interactive=False,
                                             max_height=360, visible=False, elem_id="confusion")
                drill = drilldown.build()  # the images behind the confusion matrix, after a fit

    demo.load(backbone_choices, None, backbone, api_name="list_backbones", **INTERNAL)
    dataset_file.change(inspect_dataset, dataset_file, [summary, counts_plot, thumbs, skipped, facts_state],
                        api_name="inspect_dataset")
    example_button.click(use_example_dataset, None, dataset_file, api_name="example_dataset")
    strategy.change(describe_strategy, strategy, strategy_note, api_name="describe_strategy", **INTERNAL)
    gr.on([facts_state.change, backbone.change, strategy.change, image_size.change, epochs.change,
           advice_state.change],
          estimate_text, [facts_state, backbone, strategy, image_size, epochs, advice_state], estimate,
          api_name="estimate", **INTERNAL)
    # auto's advice: after each new upload and whenever a setting it depends on is settled
    gr.on([facts_state.change, backbone.change, strategy.change, image_size.blur, image_size.submit,
           epochs.blur, epochs.submit, max_seconds.blur, max_seconds.submit],
          advise_upload, [dataset_file, backbone, image_size, epochs, max_seconds, strategy], [advice, advice_state],
          api_name="advise", trigger_mode="always_last", concurrency_id="advise", concurrency_limit=1)
    train_button.click(
        training_started, None, [train_button, cancel_button, progress_area, curves, run_state],
        api_name="lock_train", queue=False, **INTERNAL,
    ).then(
        train_model, [dataset_file, backbone, strategy, model_name, image_size, epochs, batch_size, max_seconds,
                      target_file, balance, run_state],
        [status, accuracy_plot, loss_plot, results, per_class, confusion, run_state, trained_state],
        api_name="train", show_progress_on=[progress_area], **TRAINING,
    ).then(
        after_training, [trained_state, zoo.query],
        [zoo.table, predict.model, zoo.model, zoo.card, predict.text, backbone, train_button, cancel_button,
         progress_area, run_state],
        api_name="after_training", **INTERNAL,
    ).then(drilldown.after_fit, [trained_state, dataset_file], drill.outputs, api_name="drill_down")
    drilldown.wire(drill, confusion)
    cancel_button.click(cancel_training, run_state, status, api_name="cancel", queue=False)
    return TrainTab(dataset_file=dataset_file, backbone=backbone, facts=facts_state)
