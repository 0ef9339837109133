"""The dataset a user uploads: opened and checked once per upload, within the deployment's limits.

An upload is read four ways during one fine-tune (the summary, auto's advice after each settings
change, the fit, a comparison). `open_upload` validates the zip the first time (`transfer.data`)
and keeps the result, keyed by the file's path, size and modification time and the limits; later
calls get a copy of it, so a fit that drops an unreadable image does not change what the next one
sees. The dataset's summary, class counts and thumbnails for the Fine-tune tab are drawn here too.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from transfer.data import Dataset, Limits, load_dataset
from ui.config import AppConfig
from ui.views import SPLIT_COLOURS
from zoo import zoo_dir
from zoo.images import ImageError, open_image

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLE_DATASET = ASSETS / "digits"


class UploadCache:
    """The last few uploads, validated; thread-safe. Keyed by the file, never by the user."""

    def __init__(self, size: int = 8):
        self.size = size
        self._datasets: OrderedDict[tuple, Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, path: Path, limits: Limits) -> Dataset:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, limits)
        with self._lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key].copy()
        dataset = load_dataset(path, limits=limits)  # outside the lock: other uploads need not wait
        with self._lock:
            self._datasets[key] = dataset
            while len(self._datasets) > self.size:
                self._datasets.popitem(last=False)
        return dataset.copy()


UPLOADS = UploadCache()  # per process: every user's uploads are distinct files


def open_upload(zip_path: str | None, config: AppConfig) -> Dataset:
    """The uploaded zip as a validated dataset, within this deployment's limits."""
    if not zip_path:
        raise gr.Error("Upload a .zip of class folders first (or click “Try the example dataset”).")
    path = Path(zip_path)
    if not path.is_file():
        raise gr.Error("The uploaded file is gone (uploads are cleared after a while); upload it again.")
    if path.suffix.lower() != ".zip":
        raise gr.Error(f"{path.name} is not a .zip. Zip the folder that holds one folder per class "
                       "(cats/…, dogs/…) and upload the zip; browsers drop the folder structure otherwise.")
    size_mb = path.stat().st_size / 2**20
    if size_mb > config.max_upload_mb:
        raise gr.Error(f"{path.name} is {size_mb:.0f} MB; this app takes zips up to {config.max_upload_mb} MB. "
                       "Use fewer or smaller images (or the command line, which has no such limit).")
    dataset = UPLOADS.open(path, Limits(max_files=config.max_images * 2))
    count = len(dataset.train) + len(dataset.val) + len(dataset.test)
    if count > config.max_images:
        raise gr.Error(f"{path.name} holds {count} images; this app takes at most {config.max_images} per dataset. "
                       "Use fewer images (or the command line, which has no such limit).")
    return dataset


def open_target(zip_path: str | None, config: AppConfig) -> Path | None:
    """The optional target-domain zip (checked by the fit like the dataset), within the upload limit."""
    if not zip_path:
        return None
    path = Path(zip_path)
    if not path.is_file() or path.suffix.lower() != ".zip":
        raise gr.Error("The target-domain images must be a .zip (upload it again).")
    if path.stat().st_size / 2**20 > config.max_upload_mb:
        raise gr.Error(f"{path.name} is over {config.max_upload_mb} MB; this app takes zips up to that size.")
    return path


def example_dataset_zip() -> str:
    """assets/digits as a zip (what a user would upload), built once into the zoo's cache."""
    files = sorted(file for file in EXAMPLE_DATASET.rglob("*") if file.is_file() and not file.name.startswith("."))
    digest = hashlib.sha1(repr([(f.relative_to(EXAMPLE_DATASET).as_posix(), f.stat().st_size) for f in files])
                          .encode()).hexdigest()[:12]
    target = zoo_dir() / "cache" / "examples" / f"{EXAMPLE_DATASET.name}-{digest}" / f"{EXAMPLE_DATASET.name}.zip"
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(f".{os.getpid()}.partial")
    with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            archive.write(file, f"{EXAMPLE_DATASET.name}/{file.relative_to(EXAMPLE_DATASET).as_posix()}")
    os.replace(staging, target)
    return str(target)


# --- what the upload holds ---------------------------------------------------------------------------


def summary_text(dataset: Dataset) -> str:
    split = ("its own train/val folders" if dataset.split_from == "folders"
             else "a stratified 80/20 split, fixed seed")
    test = f" / {len(dataset.test)} test (held out: the reported figures come from it)" if dataset.test else ""
    lines = [f"**{dataset.name}**: {len(dataset.classes)} classes, "
             f"{len(dataset.train)} training / {len(dataset.val)} validation images{test} ({split})."]
    if dataset.skipped:
        lines.append(f"{len(dataset.skipped)} file(s) skipped; the reasons are listed below.")
    text = _text_summary(dataset)
    if text:
        lines.append(text)
    lines += [f"**Warning:** {warning}" for warning in dataset.warnings]
    return "\n\n".join(lines)


def _text_summary(dataset: Dataset) -> str:
    """What the metadata file(s) gave: how many images have a sentence, how many rows did not fit."""
    report = dataset.text_report or {}
    if not report:
        return ""
    total = len(dataset.train) + len(dataset.val) + len(dataset.test)
    with_text = report.get("images_with_text", 0)
    problems = report.get("num_rows_naming_missing_files", 0) + len(report.get("texts_without_image") or [])
    if not with_text:
        return ("**Text:** a metadata file is there, but none of its rows gives a sentence for an image here; "
                "the model will read images only.")
    line = (f"**Text:** {with_text} of {total} images have a sentence (metadata file), so the model will read "
            "the text too and answer from the image, the text, or both.")
    if problems:
        line += f" {problems} metadata row(s) reported as problems (see the warnings)."
    return line


def counts_frame(dataset: Dataset) -> pd.DataFrame:
    """Every split for every class, zero where there is none: gradio's plots keep the series of
    their first value, so a later dataset's test/ split would not show otherwise."""
    rows = [{"class": label, "split": split, "images": counts.get(split, 0)}
            for label, counts in dataset.class_counts().items() for split in SPLIT_COLOURS]
    return pd.DataFrame(rows, columns=["class", "split", "images"])


def thumbnails(dataset: Dataset, most: int = 40, side: int = 96) -> list[tuple[Any, str]]:
    """A few training images per class (as many classes as fit in `most` pictures)."""
    per_class = max(1, min(4, most // max(1, len(dataset.classes))))
    chosen = []
    for index, label in enumerate(dataset.classes):
        chosen += [sample for sample in dataset.train if sample.label == index][:per_class]
    thumbs = []
    for sample, content in dataset.read_bytes(chosen[:most]):
        if isinstance(content, Exception):  # a damaged zip member: the fit reports it
            continue
        try:
            image = open_image(content, shorter_side=side, name=sample.relpath)
        except ImageError:
            continue  # the fit reports it; a preview just leaves it out
        thumbs.append((image, dataset.classes[sample.label]))
    return thumbs
