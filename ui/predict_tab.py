"""The Predict tab: pick a model, give an image (upload, webcam, example), read the top labels; an
image+text model also takes a sentence (image, text, or both); several images at once in a table;
and a Grad-CAM heatmap of what the model looked at, for its top class or one the user picks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from ui.gpu import PREDICT_SECONDS, on_gpu
from ui.handlers import INTERNAL, PREDICTING, friendly_errors
from ui.uploads import ASSETS, EXAMPLE_DATASET
from ui.views import enlarged
from ui.zoo_tab import model_names, still_there
from zoo.catalog import read_entry
from zoo.predict import ModelCache, explain, predict

MODEL_CACHE = ModelCache(size=4)  # loaded models, shared by every user (read-only; keyed by content)
MOST_IMAGES_AT_ONCE = 256
TOP_CLASS = "the top class"
HEATMAP_SIDE = 224  # smaller overlays (a 32 px model's crop) are enlarged to this


@friendly_errors
def refresh_models(selected: str | None):
    """The model picker on page load (and its text box)."""
    names = model_names()
    keep = still_there(selected, names)
    return gr.update(choices=names, value=keep), model_inputs(keep)


@friendly_errors
def model_inputs(name: str | None):
    """A text box only for models that take text beside the image, emptied whenever the model changes
    (a hidden box must not carry an old sentence into the next model's prediction)."""
    spec = read_entry(name).spec if name else None
    encoder = (spec.text or {}).get("encoder") if spec is not None and spec.text else None
    if not encoder:
        return gr.update(visible=False, value="")
    return gr.update(visible=True, value="", info=f"This model also reads a sentence ({encoder} encoder). "
                                                  "Give the image, the text, or both.")


def _require_model(name: str | None) -> str:
    if not name:
        raise gr.Error("Pick a model first (the zoo is empty? Train one in the Fine-tune tab).")
    return name


def _images_only(name: str) -> gr.Error:
    return gr.Error(f"'{name}' takes images only; clear the text (or pick a model trained on images with text).")


@on_gpu(PREDICT_SECONDS)
@friendly_errors
def predict_image(name: str | None, image: str | None, top_k: float, text: str = "") -> dict[str, float]:
    """Top-k labels for one image, as gr.Label wants them. An image+text model also takes `text`,
    and answers from the image alone, the text alone, or both."""
    name = _require_model(name)
    text = (text or "").strip()
    loaded = MODEL_CACHE.get(name)
    takes_text = loaded.spec.text is not None
    if not image and not (takes_text and text):
        raise gr.Error("Upload an image (or click one of the examples) first"
                       + (", or type the text beside it." if takes_text else "."))
    if text and not takes_text:
        raise _images_only(name)
    [top] = predict(loaded, [image or None], texts=[text or None] if takes_text else None, top_k=int(top_k))
    return {row["label"]: row["score"] for row in top}


@friendly_errors
def predict_when_ready(name: str | None, image: str | None, top_k: float, text: str = "") -> dict[str, float] | None:
    """Predict as soon as an image is chosen (upload or example); quiet while the model or image is missing."""
    if not name or not image:
        return None
    return predict_image(name, image, top_k, text)


@on_gpu(PREDICT_SECONDS)
@friendly_errors
def predict_images(name: str | None, files: list[str] | None, top_k: float, text: str = "") -> pd.DataFrame:
    """One row per uploaded image: the best label, its score and the runners-up. For an image+text
    model the text box, when filled, goes with every image."""
    name = _require_model(name)
    if not files:
        raise gr.Error("Upload one or more images first.")
    if len(files) > MOST_IMAGES_AT_ONCE:
        raise gr.Error(f"{len(files)} images at once is too many here; upload at most {MOST_IMAGES_AT_ONCE}.")
    text = (text or "").strip()
    loaded = MODEL_CACHE.get(name)
    if text and loaded.spec.text is None:
        raise _images_only(name)
    results = predict(loaded, files, texts=[text] * len(files) if text else None, top_k=int(top_k))
    rows = [{"image": Path(file).name, "label": top[0]["label"], "score": round(top[0]["score"], 4),
             "top-k": ", ".join(f"{row['label']} {row['score']:.2f}" for row in top)}
            for file, top in zip(files, results)]
    return pd.DataFrame(rows, columns=["image", "label", "score", "top-k"])


@friendly_errors
def explain_classes(name: str | None):
    """The classes the heatmap can be drawn for: the top class, or any of the model's."""
    labels = read_entry(name).spec.label_names if name else []
    return gr.update(choices=[TOP_CLASS, *labels], value=TOP_CLASS)


@friendly_errors
def explain_image(name: str | None, image: str | None, target: str | None, text: str = ""):
    """Grad-CAM (`zoo.explain`): the heatmap over the crop the model sees, and what it shows."""
    name = _require_model(name)
    if not image:
        raise gr.Error("Upload an image (or click one of the examples) first.")
    text = (text or "").strip()
    loaded = MODEL_CACHE.get(name)
    if text and loaded.spec.text is None:
        raise _images_only(name)
    shown = explain(loaded, image, None if target in (None, "", TOP_CLASS) else target, text=text or None)
    note = (f"Where the evidence for **{shown.label}** ({shown.score:.1%}) lies: red most, blue least "
            f"(Grad-CAM on `{shown.layer}`, over the centre crop the model sees).")
    if shown.label != shown.top_label:
        note += f" The model's own answer is **{shown.top_label}** ({shown.top_score:.1%})."
    return enlarged(shown.overlay, HEATMAP_SIDE), note


@friendly_errors
def explain_when_ready(name: str | None, image: str | None, target: str | None, text: str = ""):
    """A class picked for the heatmap: draw it when there is an image; quiet otherwise."""
    if not name or not image:
        return gr.skip(), gr.skip()
    return explain_image(name, image, target, text)


def clear_heatmap():
    """A new image or model: the old heatmap no longer applies."""
    return None, ""


def example_images() -> list[list[str]]:
    """The tab's examples: the photos, and a few digits of the example dataset."""
    photos = sorted((ASSETS / "photos").glob("*.jpg"))
    digits = [sorted((EXAMPLE_DATASET / digit).glob("*.png"))[0] for digit in ("3", "7")]
    return [[str(path)] for path in [*photos, *digits]]


# --- layout and wiring -----------------------------------------------------------------------------


@dataclass
class PredictTab:
    """The widgets other tabs update (a new model selects itself here)."""

    model: gr.Dropdown
    text: gr.Textbox


def build(demo: gr.Blocks) -> PredictTab:
    with gr.Tab("Predict", id="predict"):
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(label="Model", choices=[], allow_custom_value=True, elem_id="predict-model")
                image = gr.Image(type="filepath", label="Image", height=320, elem_id="predict-image",
                                 sources=["upload", "clipboard", "webcam"])
                text = gr.Textbox("", label="Text beside the image", visible=False, elem_id="predict-text")
                top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k labels")
                predict_button = gr.Button("Predict", variant="primary", elem_id="predict-button")
                gr.Examples(example_images(), inputs=[image], label="Examples")
            with gr.Column():
                label = gr.Label(label="Prediction", elem_id="prediction")
                with gr.Accordion("What the model looked at (Grad-CAM)", open=True):
                    with gr.Row():
                        explain_class = gr.Dropdown([TOP_CLASS], value=TOP_CLASS, label="Heatmap for",
                                                    allow_custom_value=True, elem_id="explain-class", scale=3)
                        explain_button = gr.Button("Show heatmap", elem_id="explain-button", scale=1)
                    heatmap = gr.Image(type="pil", label="Heatmap", height=260, interactive=False,
                                       elem_id="heatmap")
                    heatmap_note = gr.Markdown(elem_id="heatmap-note")
                with gr.Accordion("Several images at once", open=False):
                    batch_files = gr.File(file_count="multiple", file_types=["image"], label="Images")
                    batch_button = gr.Button("Predict all")
                    batch_table = gr.Dataframe(interactive=False, label="Predictions")

    inputs = [model, image, top_k, text]
    demo.load(refresh_models, model, [model, text], api_name="list_predict_models", **INTERNAL)
    model.change(model_inputs, model, text, api_name="model_inputs", **INTERNAL)
    predict_button.click(predict_image, inputs, label, api_name="predict", **PREDICTING)
    image.change(predict_when_ready, inputs, label, api_name="predict_on_change", **PREDICTING, **INTERNAL)
    text.submit(predict_image, inputs, label, api_name="predict_on_submit", **PREDICTING, **INTERNAL)
    model.change(explain_classes, model, explain_class, api_name="explain_classes", **INTERNAL)
    explain_inputs = [model, image, explain_class, text]
    explain_button.click(explain_image, explain_inputs, [heatmap, heatmap_note], api_name="explain", **PREDICTING)
    explain_class.input(explain_when_ready, explain_inputs, [heatmap, heatmap_note], api_name="explain_on_pick",
                        **PREDICTING, **INTERNAL)
    gr.on([image.change, model.change], clear_heatmap, None, [heatmap, heatmap_note], api_name="clear_heatmap",
          queue=False, **INTERNAL)
    batch_button.click(predict_images, [model, batch_files, top_k, text], batch_table, api_name="predict_batch",
                       **PREDICTING)
    return PredictTab(model=model, text=text)
