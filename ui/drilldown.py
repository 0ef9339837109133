"""The Fine-tune tab's error drill-down: after a fit, the images behind each confusion-matrix cell
and the most confidently wrong ones with a Grad-CAM heatmap.

What a fit got wrong is saved with the model (`errors` in transfer.json, see `transfer.errors`);
the images themselves come from the upload the fit read (`ui.uploads.open_upload`). Clicking a
cell of the confusion matrix shows its images with their scores: for a mistake, the probability
the model gave its wrong answer; on the diagonal, the probability of the right one (scored when
clicked, at most `MOST_PER_CELL` of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from transfer.data import Dataset, Sample
from ui.config import app_config
from ui.handlers import friendly_errors
from ui.predict_tab import MODEL_CACHE
from ui.uploads import open_upload
from ui.views import enlarged
from zoo.catalog import read_entry
from zoo.explain import explain_images
from zoo.images import ImageError, open_image, resize_shorter_side
from zoo.predict import probabilities

MOST_WRONG = 8  # the gallery of the most confidently wrong images (each with Grad-CAM)
MOST_PER_CELL = 24  # thumbnails shown for one cell
THUMBNAIL_SIDE = 128
CELL_HINT = "Click a cell of the confusion matrix to see its images."


@dataclass
class DrillDown:
    box: gr.Column
    wrong: gr.Gallery
    cell_title: gr.Markdown
    cell: gr.Gallery
    state: gr.State  # {"name", "upload"} of the fit shown

    @property
    def outputs(self) -> list:
        return [self.state, self.box, self.wrong, self.cell_title, self.cell]


def build() -> DrillDown:
    """The drill-down's widgets, hidden until a fit has finished (call inside the tab's layout)."""
    with gr.Column(visible=False, elem_id="drill-down") as box:
        wrong = gr.Gallery(label="Most confidently wrong (likely label mistakes), with what the model looked at",
                           columns=8, height=220, object_fit="contain", allow_preview=True, elem_id="most-wrong")
        cell_title = gr.Markdown(CELL_HINT, elem_id="cell-title")
        cell = gr.Gallery(label="Images of the selected cell", columns=8, height=240, object_fit="contain",
                          allow_preview=True, elem_id="cell-images")
    return DrillDown(box=box, wrong=wrong, cell_title=cell_title, cell=cell, state=gr.State(None))


def wire(drill: DrillDown, confusion: gr.Dataframe) -> None:
    confusion.select(show_cell, drill.state, [drill.cell_title, drill.cell], api_name="confusion_cell")


# --- handlers --------------------------------------------------------------------------------------


@friendly_errors
def after_fit(name: str | None, zip_path: str | None):
    """Once a fit is saved: the most confidently wrong images with their Grad-CAM, and the cells ready."""
    report = _report(name) if name else None
    if not report or not zip_path:
        return None, gr.update(visible=False), [], CELL_HINT, []
    dataset = open_upload(zip_path, app_config())
    samples = _samples(dataset, report["split"])
    images = _read(dataset, [samples[row["file"]] for row in report["files"][:MOST_WRONG] if row["file"] in samples])
    rows = [row for row in report["files"][:MOST_WRONG] if row["file"] in images]
    loaded = MODEL_CACHE.get(name)
    texts = [samples[row["file"]].text for row in rows] if loaded.spec.text is not None else None
    shown = explain_images(loaded, [images[row["file"]] for row in rows], [row["predicted"] for row in rows],
                           texts=texts)
    gallery = [(enlarged(item.overlay), f"{row['file']}: {row['true']} taken for {row['predicted']} "
                                        f"({row['score']:.0%})") for row, item in zip(rows, shown)]
    where = _split_name(report["split"])
    hint = (f"{report['count']} of {report['evaluated']} {where} images were misclassified. " if report["count"]
            else f"None of the {report['evaluated']} {where} images was misclassified. ") + CELL_HINT
    return ({"name": name, "upload": zip_path}, gr.update(visible=True),
            gr.update(value=gallery, visible=bool(gallery)), hint, [])


@friendly_errors
def show_cell(state: dict | None, event: gr.SelectData):
    """The images of the clicked confusion-matrix cell (row: true class, column: predicted)."""
    if not state or not isinstance(event.index, (list, tuple)) or event.index[1] < 1:
        return CELL_HINT, []
    name = state["name"]
    classes = read_entry(name).spec.label_names
    true, predicted = classes[event.index[0]], classes[event.index[1] - 1]
    return cell_images(name, state["upload"], true, predicted)


def cell_images(name: str, zip_path: str, true: str, predicted: str) -> tuple[str, list[tuple[Any, str]]]:
    """(title, thumbnails with captions) of the evaluated images of class `true` predicted as `predicted`."""
    report = _report(name)
    if not report:
        return "This model kept no list of its mistakes.", []
    dataset = open_upload(zip_path, app_config())
    samples = _samples(dataset, report["split"])
    where = _split_name(report["split"])
    if true != predicted:
        rows = [row for row in report["files"] if (row["true"], row["predicted"]) == (true, predicted)]
        images = _read(dataset, [samples[row["file"]] for row in rows[:MOST_PER_CELL] if row["file"] in samples])
        thumbs = [(_thumbnail(images[row["file"]]), f"{row['file']} ({row['score']:.0%} {predicted})")
                  for row in rows if row["file"] in images]
        return f"**{len(rows)}** {where} image(s) of **{true}** taken for **{predicted}**:", thumbs
    wrong = {row["file"] for row in report["files"]}
    index = read_entry(name).spec.label_names.index(true)
    right = [sample for sample in samples.values() if sample.label == index and sample.relpath not in wrong]
    images = _read(dataset, right[:MOST_PER_CELL])
    shown = [sample for sample in right[:MOST_PER_CELL] if sample.relpath in images]
    loaded = MODEL_CACHE.get(name)
    texts = [sample.text for sample in shown] if loaded.spec.text is not None else None
    scores = probabilities(loaded, [images[s.relpath] for s in shown], texts=texts)[:, index].tolist() if shown else []
    thumbs = [(_thumbnail(images[s.relpath]), f"{s.relpath} ({score:.0%} {true})") for s, score in zip(shown, scores)]
    more = f" (the first {len(shown)} shown)" if len(right) > len(shown) else ""
    return f"**{len(right)}** {where} image(s) of **{true}** recognised{more}:", thumbs


# --- helpers ---------------------------------------------------------------------------------------


def _report(name: str) -> dict | None:
    return read_entry(name).info.get("errors")


def _samples(dataset: Dataset, split: str) -> dict[str, Sample]:
    """relpath -> sample of the upload's `split` (the images the fit evaluated)."""
    return {sample.relpath: sample for sample in dataset.splits()[split]}


def _read(dataset: Dataset, samples: list[Sample]) -> dict[str, Image.Image]:
    """relpath -> image, for the samples that can be read (a damaged one is simply left out)."""
    images = {}
    for sample, content in dataset.read_bytes(samples):
        if isinstance(content, Exception):
            continue
        try:
            images[sample.relpath] = open_image(content, name=sample.relpath)
        except ImageError:
            continue
    return images


def _thumbnail(image: Image.Image) -> Image.Image:
    return resize_shorter_side(image, THUMBNAIL_SIDE) if min(image.size) > THUMBNAIL_SIDE else enlarged(image)


def _split_name(split: str) -> str:
    return "test" if split == "test" else "validation"
