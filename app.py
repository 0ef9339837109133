"""Transfer Zoo in the browser: browse the zoo, fine-tune on an uploaded zip in one click, predict.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)

The app is thin on purpose. Every handler below is a plain function that turns widget values into
one call to `transfer` or `zoo` and the answer back into widget values; no ML happens here. The file
reads top to bottom: configuration, shared helpers, then the handlers of each tab (Zoo, Predict,
Fine-tune, Compare strategies), then the layout (one `gr.Tab` per task) and the wiring (every event
has an `api_name`, so everything the page does, `gradio_client` can do too).

The strategy is "auto" by default: after each upload (and settings change) `advise_upload` runs
`transfer.advise` and shows its choice, reasons and measured numbers; the fit then runs with
strategy="auto", whose advice reads the same cached measurements. The Compare tab runs
`transfer.compare` on the same upload, the same way a fit runs (below).

Training runs `transfer.fit` in a worker thread owned by a `TrainingRun`, which the handler keeps
in a `gr.State` (per user, never a module global). The fit's progress callback feeds a queue; the
train handler is a generator that drains it, moves the `gr.Progress` bar and yields the live
loss/accuracy curve. Cancel sets the run's stop flag, which `fit` polls every batch: it raises
`transfer.Cancelled` within a batch or two and saves nothing. Fits wait in the queue one at a time
(`concurrency_id="training"`), while predictions have their own concurrency and keep answering.

Who may do what: locally, everything. On a Hugging Face Space (`SPACE_ID` set) anyone may browse,
predict, export and run a short fine-tune from a bundled or zoo backbone, but deleting, renaming,
importing, anything on the Hub, and fine-tuning from a Hub name or a file need the Space owner's
Hugging Face sign-in (`gr.LoginButton`; README front matter `hf_oauth: true`), so the Space's
`HF_TOKEN` is never used on a visitor's behalf and visitors cannot name files on the server.

Environment:
    ZOO_DIR                where models live (a Space with persistent storage: /data/zoo)
    APP_MAX_UPLOAD_MB      largest dataset zip accepted (default 200)
    APP_MAX_IMAGES         most images in one dataset (default 5000)
    APP_MAX_TRAIN_SECONDS  time budget cap for every fit (default: none locally, 600 on a Space)
    SPACE_ID, SPACE_AUTHOR_NAME   set by Spaces; the owner is SPACE_AUTHOR_NAME or SPACE_ID's namespace
    APP_ADMINS             further Hugging Face usernames allowed the owner's actions (comma-separated)
    HF_TOKEN               the Hub token for push / pull (shown only when one is set)
"""

from zoo._malloc import tune_malloc

tune_malloc()  # before torch is imported: 2-3x on small CPUs

import os  # noqa: E402

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # the app never needs the internet

import contextlib  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import queue  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from transfer import Cancelled, DataError  # noqa: E402
from transfer.data import Dataset, Limits, load_dataset  # noqa: E402
from transfer.strategies import STRATEGIES, estimate_seconds  # noqa: E402
from transfer.train import Progress  # noqa: E402
from zoo import ZooError, zoo_dir  # noqa: E402
from zoo.images import ImageError, open_image  # noqa: E402
from zoo.predict import ModelCache, predict  # noqa: E402
from zoo.store import list_entries, read_entry, remove_model, rename_model, validate_name  # noqa: E402
from zoo.weights import BUNDLED, DEFAULT_BACKBONE  # noqa: E402

log = logging.getLogger("transfer_zoo.app")

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"
EXAMPLE_DATASET = ASSETS / "digits"
MODEL_CACHE = ModelCache(size=4)  # loaded models, shared by every user (read-only)


# --- configuration ---------------------------------------------------------------------------------


SPACE_TRAIN_SECONDS = 600.0  # on a public Space every fit stops after this (APP_MAX_TRAIN_SECONDS overrides)


@dataclass(frozen=True)
class AppConfig:
    """What the environment says about this deployment; read per request (cheap), never mutated."""

    max_upload_mb: int = 200  # largest dataset zip accepted
    max_images: int = 5000  # most images in one dataset
    max_train_seconds: float | None = None  # every fit's time budget is capped at this
    space_id: str | None = None  # "owner/space" on a Hugging Face Space
    owners: tuple[str, ...] = ()  # usernames allowed to delete, rename and use the Hub token
    oauth_ready: bool = False  # the Space has Hugging Face sign-in (hf_oauth: true)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "AppConfig":
        env = os.environ if environ is None else environ
        space_id = env.get("SPACE_ID") or None
        owner = env.get("SPACE_AUTHOR_NAME") or (space_id.split("/")[0] if space_id else "")
        admins = [name.strip() for name in env.get("APP_ADMINS", "").split(",") if name.strip()]
        return cls(
            max_upload_mb=int(_positive(env, "APP_MAX_UPLOAD_MB", cls.max_upload_mb)),
            max_images=int(_positive(env, "APP_MAX_IMAGES", cls.max_images)),
            max_train_seconds=_positive(env, "APP_MAX_TRAIN_SECONDS", SPACE_TRAIN_SECONDS if space_id else None),
            space_id=space_id,
            owners=tuple(name.lower() for name in [owner, *admins] if name),
            oauth_ready=bool(space_id and env.get("OAUTH_CLIENT_ID")),
        )

    @property
    def on_space(self) -> bool:
        return self.space_id is not None

    def time_budget(self, requested: float | None) -> float | None:
        """The fit's `max_seconds`: what the user asked for, capped by the deployment's limit."""
        limits = [value for value in (requested, self.max_train_seconds) if value]
        return min(limits) if limits else None


def _positive(env, key: str, default: float | None) -> float | None:
    """`env[key]` as a positive number; `default` when it is unset or not one (with a warning)."""
    text = env.get(key)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0
    if value > 0:
        return value
    log.warning("%s=%r is not a positive number; using %s", key, text, default)
    return default


def app_config() -> AppConfig:
    return AppConfig.from_env()


# --- shared helpers --------------------------------------------------------------------------------


def friendly_errors(fn: Callable) -> Callable:
    """Turn the packages' errors into `gr.Error` (the message says what to fix); log anything else.

    Works for plain and generator handlers, and keeps the signature gradio inspects (gr.Progress,
    gr.OAuthProfile arguments)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            with _as_gradio_errors(fn.__name__):
                yield from fn(*args, **kwargs)

        return generator

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with _as_gradio_errors(fn.__name__):
            return fn(*args, **kwargs)

    return call


@contextlib.contextmanager
def _as_gradio_errors(action: str) -> Iterator[None]:
    try:
        yield
    except gr.Error:
        raise
    except (DataError, ZooError) as error:
        raise gr.Error(str(error), print_exception=False) from None  # a user error, not a server fault
    except Exception as error:  # the UI boundary: a short message for the user, the traceback for the log
        log.exception("%s failed", action)
        raise gr.Error(f"Something went wrong ({type(error).__name__}: {error}). "
                       "The details are in the server log.") from None


def require_owner(action: str, profile: gr.OAuthProfile | None, config: AppConfig) -> None:
    """Locally anyone may `action`; on a Space only its owner, signed in with Hugging Face."""
    if not config.on_space:
        return
    owner = config.owners[0] if config.owners else "the Space's owner"
    if not config.oauth_ready:
        raise gr.Error(f"On this Space only its owner ({owner}) may {action}, and it has no sign-in "
                       "(add `hf_oauth: true` to the Space's README). Run the app locally to do this.")
    if profile is None:
        raise gr.Error(f"Sign in with Hugging Face (button at the top) as the Space's owner ({owner}) to {action}.")
    if profile.username.lower() not in config.owners:
        raise gr.Error(f"Only the Space's owner ({owner}) may {action}; you are signed in as {profile.username}.")


def _hub():
    """`zoo.hub`, imported when first needed (it pulls in huggingface_hub's API client)."""
    try:
        from zoo import hub
    except ImportError as error:
        raise gr.Error(f"Hugging Face Hub support is not available in this installation ({error}).") from None
    return hub


def _hub_token() -> str | None:
    try:
        return _hub().hub_token()
    except gr.Error:
        return None


# --- Zoo tab ----------------------------------------------------------------------------------------

ZOO_COLUMNS = ["name", "backbone", "strategy", "classes", "accuracy", "created"]


def zoo_rows(query: str = "") -> pd.DataFrame:
    """The zoo table: one row per model, newest first, filtered by `query`."""
    rows = []
    for entry in list_entries(query=(query or "").strip() or None):
        summary = entry.summary()
        rows.append({
            "name": entry.name,
            "backbone": summary["backbone"] or "",
            "strategy": f"damaged: {entry.damaged}" if entry.damaged else (summary["strategy"] or ""),
            "classes": _classes_text(summary["classes"]),
            "accuracy": _accuracy_text(summary["accuracy"], summary["metrics_split"]),
            "created": (summary["created"] or "")[:16].replace("T", " "),
        })
    return pd.DataFrame(rows, columns=ZOO_COLUMNS)


def _classes_text(classes: list[str], width: int = 40) -> str:
    """As many class names as fit in about `width` characters, then how many there are."""
    text = ", ".join(classes)
    if len(text) <= width:
        return text
    shown = []
    for label in classes:
        if shown and len(", ".join([*shown, label])) > width:
            break
        shown.append(label)
    return ", ".join(shown) + f", … ({len(classes)})"


def _accuracy_text(accuracy: float | None, split: str | None) -> str:
    if accuracy is None:
        return ""
    return f"{accuracy:.1%}" + (f" ({split})" if split else "")


def model_names() -> list[str]:
    """Models that can be used (damaged folders are listed in the table, not offered)."""
    return [entry.name for entry in list_entries() if not entry.damaged]


def image_backbones() -> list[str]:
    """Backbones offered for a fine-tune: bundled ImageNet weights, then image-only zoo models."""
    names = list(BUNDLED)
    for entry in list_entries():
        summary = entry.summary()
        if not entry.damaged and not summary["takes_text"] and entry.name not in BUNDLED:
            names.append(f"zoo:{entry.name}")
    return names


def _still_there(selected: str | None, names: list[str]) -> str | None:
    """The selection if it still exists, else the newest model."""
    return selected if selected in names else (names[0] if names else None)


@friendly_errors
def refresh_zoo(query: str, selected: str | None):
    """The Zoo tab after the zoo changed or on page load: table, selected model, its card."""
    names = model_names()
    keep = _still_there(selected, names)
    return zoo_rows(query), gr.update(choices=names, value=keep), model_card(keep)


@friendly_errors
def refresh_models(selected: str | None):
    """The Predict tab's model picker on page load (and its text box)."""
    names = model_names()
    keep = _still_there(selected, names)
    return gr.update(choices=names, value=keep), model_inputs(keep)


@friendly_errors
def pick_row(event: gr.SelectData) -> str:
    """Clicking a table row selects that model."""
    return str(event.row_value[0]) if event.row_value else gr.skip()


@friendly_errors
def model_card(name: str | None) -> str:
    """The selected model's card (its README.md without the YAML front matter)."""
    if not name:
        return "Select a model in the table to see its card."
    entry = read_entry(name)
    card = entry.path / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# {name}\n\n(no model card)"
    if text.startswith("---"):
        _, _, text = text[3:].partition("\n---")
    return text.strip()


@friendly_errors
def delete_model(name: str | None, profile: gr.OAuthProfile | None) -> str:
    require_owner("delete models", profile, app_config())
    if not name:
        raise gr.Error("Select the model to delete first.")
    builtin = read_entry(name).summary().get("builtin")
    remove_model(name)
    MODEL_CACHE.clear()
    if builtin:
        return f"Removed the built-in **{name}** from this zoo's list (bring it back with `python -m zoo restore {name}`)."
    return f"Deleted **{name}**."


@friendly_errors
def rename_selected(name: str | None, new_name: str, profile: gr.OAuthProfile | None) -> tuple[str, str]:
    require_owner("rename models", profile, app_config())
    if not name:
        raise gr.Error("Select the model to rename first.")
    new_name = (new_name or "").strip()
    if not new_name:
        raise gr.Error("Type the new name first.")
    rename_model(name, new_name)
    return f"Renamed **{name}** to **{new_name}**.", new_name


def can_export() -> bool:
    """Export and import exist (zoo.store.export_model / import_model)."""
    from zoo import store

    return hasattr(store, "export_model") and hasattr(store, "import_model")


EXPORT_KEEP_SECONDS = 3600  # exported zips wait this long for their download, then go


@friendly_errors
def export_selected(name: str | None) -> str:
    """The selected model as one zip to download (anyone may: it is what the page already serves)."""
    from zoo.store import export_model

    if not name:
        raise gr.Error("Select the model to export first.")
    exports = zoo_dir() / "cache" / "exports"
    for old in exports.glob("*/*.zip"):
        if time.time() - old.stat().st_mtime > EXPORT_KEEP_SECONDS:
            shutil.rmtree(old.parent, ignore_errors=True)
    exports.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=exports))
    return str(export_model(name, output=folder / f"{name}.zip"))


@friendly_errors
def import_upload(archive: str | None, name: str, profile: gr.OAuthProfile | None) -> tuple[str, str]:
    """Add a model zip (as Export writes it) to the zoo; on a Space, the owner only."""
    from zoo.store import import_model

    require_owner("import models", profile, app_config())
    if not archive:
        raise gr.Error("Upload a model .zip first (one made with Export).")
    imported = import_model(archive, name=(name or "").strip() or None)
    return f"Imported **{imported}**.", imported


@friendly_errors
def hub_panel(profile: gr.OAuthProfile | None):
    """Show the Hub panel only when a token is set (and, on a Space, to its signed-in owner)."""
    config = app_config()
    visible = _hub_token() is not None
    if visible and config.on_space:
        visible = profile is not None and profile.username.lower() in config.owners
    return gr.update(visible=visible)


@friendly_errors
def push_to_hub(name: str | None, repo_id: str, private: bool, profile: gr.OAuthProfile | None) -> str:
    require_owner("push models to the Hub", profile, app_config())
    if not name:
        raise gr.Error("Select the model to push first.")
    hub = _hub()
    token = hub.hub_token()
    if not token:
        raise gr.Error("No Hugging Face token: set HF_TOKEN (a token with write access) and restart the app.")
    url = hub.push_model(name, repo_id=(repo_id or "").strip() or None, private=bool(private), token=token)
    return f"Pushed **{name}** to [{url}]({url})."


@friendly_errors
def pull_from_hub(repo_id: str, name: str, profile: gr.OAuthProfile | None) -> tuple[str, str]:
    require_owner("pull models from the Hub", profile, app_config())
    repo_id = (repo_id or "").strip()
    if not repo_id:
        raise gr.Error("Type the Hub repository to pull, e.g. `owner/model-name`.")
    hub = _hub()
    local = hub.pull_model(repo_id, name=(name or "").strip() or None, token=hub.hub_token())
    return f"Pulled **{repo_id}** into the zoo as **{local}**.", local


HUB_COLUMNS = ["repo_id", "strategy", "private", "downloads", "likes", "last_modified"]


@friendly_errors
def hub_models(namespace: str, profile: gr.OAuthProfile | None) -> pd.DataFrame:
    require_owner("list Hub models with the Space's token", profile, app_config())
    hub = _hub()
    rows = hub.list_hub_models((namespace or "").strip() or None, token=hub.hub_token())
    return pd.DataFrame(rows, columns=HUB_COLUMNS)


# --- Predict tab ------------------------------------------------------------------------------------


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
        raise gr.Error(f"'{name}' takes images only; clear the text (or pick a model trained on images with text).")
    [top] = predict(loaded, [image or None], texts=[text or None] if takes_text else None, top_k=int(top_k))
    return {row["label"]: row["score"] for row in top}


@friendly_errors
def predict_when_ready(name: str | None, image: str | None, top_k: float, text: str = "") -> dict[str, float] | None:
    """Predict as soon as an image is chosen (upload or example); quiet while the model or image is missing."""
    if not name or not image:
        return None
    return predict_image(name, image, top_k, text)


@friendly_errors
def predict_images(name: str | None, files: list[str] | None, top_k: float, text: str = "") -> pd.DataFrame:
    """One row per uploaded image: the best label, its score and the runners-up. For an image+text
    model the text box, when filled, goes with every image."""
    name = _require_model(name)
    if not files:
        raise gr.Error("Upload one or more images first.")
    if len(files) > 256:
        raise gr.Error(f"{len(files)} images at once is too many here; upload at most 256.")
    text = (text or "").strip()
    loaded = MODEL_CACHE.get(name)
    if text and loaded.spec.text is None:
        raise gr.Error(f"'{name}' takes images only; clear the text (or pick a model trained on images with text).")
    results = predict(loaded, files, texts=[text] * len(files) if text else None, top_k=int(top_k))
    rows = [{"image": Path(file).name, "label": top[0]["label"], "score": round(top[0]["score"], 4),
             "top-k": ", ".join(f"{row['label']} {row['score']:.2f}" for row in top)}
            for file, top in zip(files, results)]
    return pd.DataFrame(rows, columns=["image", "label", "score", "top-k"])


# --- Fine-tune tab: the dataset ----------------------------------------------------------------------


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
    dataset = load_dataset(path, limits=Limits(max_files=config.max_images * 2))
    count = len(dataset.train) + len(dataset.val) + len(dataset.test)
    if count > config.max_images:
        raise gr.Error(f"{path.name} holds {count} images; this app takes at most {config.max_images} per dataset. "
                       "Use fewer images (or the command line, which has no such limit).")
    return dataset


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
             "num_eval": len(dataset.val) + len(dataset.test), "classes": list(dataset.classes)}
    skipped = pd.DataFrame([{"file": file, "reason": reason} for file, reason in dataset.skipped[:500]],
                           columns=["file", "reason"])
    return (_summary_text(dataset), _counts_frame(dataset), _thumbnails(dataset),
            gr.update(value=skipped, visible=bool(dataset.skipped)), facts)


def _summary_text(dataset: Dataset) -> str:
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


def _counts_frame(dataset: Dataset) -> pd.DataFrame:
    """Every split for every class, zero where there is none: gradio's plots keep the series of
    their first value, so a later dataset's test/ split would not show otherwise."""
    rows = [{"class": label, "split": split, "images": counts.get(split, 0)}
            for label, counts in dataset.class_counts().items() for split in SPLIT_COLOURS]
    return pd.DataFrame(rows, columns=["class", "split", "images"])


def _thumbnails(dataset: Dataset, most: int = 40, side: int = 96) -> list[tuple[Any, str]]:
    """A few training images per class (as many classes as fit in `most` pictures)."""
    per_class = max(1, min(4, most // max(1, len(dataset.classes))))
    chosen = []
    for index, label in enumerate(dataset.classes):
        chosen += [sample for sample in dataset.train if sample.label == index][:per_class]
    thumbs = []
    for sample, content in dataset.read_bytes(chosen[:most]):
        try:
            image = open_image(content, shorter_side=side, name=sample.relpath)
        except ImageError:
            continue  # the fit reports it; a preview just leaves it out
        thumbs.append((image, dataset.classes[sample.label]))
    return thumbs


# --- Fine-tune tab: settings, estimate, training -------------------------------------------------------


AUTO = "auto"  # transfer.advise measures the data and picks one of STRATEGIES


def strategy_choices() -> list[str]:
    return [AUTO, *STRATEGIES]


def describe_strategy(strategy: str) -> str:
    if strategy == AUTO:
        return ("**auto**: measure how much data there is and how much it looks like the backbone's "
                "pretraining photos, then pick one of the four (the advice appears once a dataset is loaded).")
    plan = STRATEGIES.get(strategy)
    return f"**{plan.name}**: {plan.when}." if plan else ""


@dataclass(frozen=True)
class FitSettings:
    """The Fine-tune tab's settings, checked, as `transfer.fit` keyword arguments."""

    backbone: str
    strategy: str
    name: str | None
    image_size: int | None
    epochs: int | None
    batch_size: int
    max_seconds: float | None

    @classmethod
    def from_widgets(cls, backbone, strategy, name, image_size, epochs, batch_size, max_seconds) -> "FitSettings":
        backbone = (backbone or "").strip() or DEFAULT_BACKBONE
        if strategy not in strategy_choices():
            raise gr.Error(f"Choose a strategy: {', '.join(strategy_choices())}.")
        name = (name or "").strip() or None
        if name is not None:
            validate_name(name)
        settings = cls(
            backbone=backbone, strategy=strategy, name=name,
            image_size=_whole(image_size, "Image size", 16, 1024),
            epochs=_whole(epochs, "Epochs", 1, 500),
            batch_size=_whole(batch_size, "Batch size", 2, 512) or 32,
            max_seconds=_budget(max_seconds),
        )
        return settings


def _whole(value: float | None, label: str, low: int, high: int) -> int | None:
    if value is None or value == "" or value == 0:
        return None
    if float(value) != int(value) or not low <= int(value) <= high:
        raise gr.Error(f"{label} must be a whole number from {low} to {high} (or 0 for the default).")
    return int(value)


def _architecture(backbone: str) -> str:
    """The timm architecture a backbone name stands for (for the time estimate)."""
    if backbone.startswith("zoo:"):
        try:
            return read_entry(backbone.removeprefix("zoo:")).spec.architecture
        except ZooError:
            return backbone
    return backbone.partition("@")[0].removeprefix("hf-hub:")


@friendly_errors
def estimate_text(facts: dict | None, backbone: str, strategy: str, image_size, epochs,
                  advice: dict | None = None) -> str:
    """How long the fit should take, from the measured cost model in `transfer.strategies` (for auto:
    the advised strategy's estimate, which allows for this machine's measured speed)."""
    if not facts or strategy not in strategy_choices():
        return "Load a dataset to see how long training will take."
    try:
        size = _whole(image_size, "Image size", 16, 1024)
        passes = _whole(epochs, "Epochs", 1, 500)
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
        seconds = estimate_seconds(strategy, num_train=facts["num_train"], num_eval=facts["num_eval"],
                                   image_size=size, epochs=passes,
                                   architecture=_architecture(backbone or DEFAULT_BACKBONE))
    text = (f"Estimated time{which}: about **{_duration(seconds)}**" + ("" if which else " on a 2-core CPU")
            + f" for {facts['num_train']} training and {facts['num_eval']} evaluation images.")
    if not STRATEGIES[strategy].trains_backbone:
        text += " A repeat on the same images is faster: their features are cached."
    cap = app_config().max_train_seconds
    if cap and seconds > cap:
        text += f" This app stops every fit after {_duration(cap)}, keeping the best epoch so far."
    return text


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


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
    backbone = (backbone or "").strip() or DEFAULT_BACKBONE
    if not (backbone in BUNDLED or backbone.startswith("zoo:")):
        require_owner(f"measure the data with '{backbone}' (visitors: {', '.join(BUNDLED)} or zoo:NAME)",
                      profile, config)
    try:
        size = _whole(image_size, "Image size", 16, 1024)
        passes = _whole(epochs, "Epochs", 1, 500)
        budget = _budget(max_seconds)
    except gr.Error as error:
        return gr.update(value=f"Auto's advice waits for valid settings: {error.message}", visible=True), None
    dataset = open_upload(zip_path, config)

    def report(event: Progress) -> None:
        progress((event.done, max(event.total, 1)), desc=f"Advice: {_stage_label(event.stage)}",
                 unit=_stage_unit(event.stage))

    advice = advise(dataset, backbone=backbone, image_size=size, epochs=passes,
                    budget_seconds=config.time_budget(budget), progress=report)
    facts = {"upload": zip_path, "dataset": dataset.name, "strategy": advice.strategy,
             "estimated_seconds": advice.estimated_seconds, "reasons": advice.reasons}
    return gr.update(value=_advice_text(advice), visible=True), facts


def _budget(max_seconds) -> float | None:
    """The time budget widget as seconds (0 or empty: none)."""
    if max_seconds in (None, "", 0):
        return None
    if float(max_seconds) <= 0:
        raise gr.Error("The time budget must be a positive number of seconds (or 0 for none).")
    return float(max_seconds)


def _advice_text(advice) -> str:
    """The advice in brief: the choice, its reasons, and the numbers measured."""
    size, similarity = advice.size, advice.similarity
    measured = [f"{size['num_train']} training images, about {size['median_per_class']:.0f} per class "
                f"({size['size_class']})"]
    if similarity.get("feature_shift") is not None:
        measured.append(f"feature shift {similarity['feature_shift']:.2f} "
                        f"(similar up to {advice.thresholds.get('shift_similar', 0.2):g})")
    probe = f"quick-test accuracy {similarity['final_accuracy']:.0%} on the last layer"
    if similarity.get("stage_accuracy"):
        probe += f", {max(similarity['stage_accuracy']):.0%} on the best earlier stage"
    measured.append(probe)
    measured.append("estimated fit: " + ", ".join(f"{name} {_duration(seconds)}"
                                                  for name, seconds in advice.estimated_seconds.items()))
    measured.append(f"time budget {_duration(advice.budget_seconds)}" if advice.budget_seconds else "no time budget")
    return "\n\n".join([
        f"**Auto's advice: {advice.strategy}**",
        "\n".join(f"- {reason}" for reason in advice.reasons),
        f"Measured in {advice.seconds:.1f} s: " + "; ".join(measured) + ".",
    ])


@dataclass
class TrainingRun:
    """One user's fit in a worker thread. The train and cancel handlers share it through gr.State."""

    stop: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue = field(default_factory=queue.Queue)  # Progress reports from the fit
    result: Any = None  # transfer.fit.FitResult once it succeeded
    error: Exception | None = None  # what ended it otherwise (transfer.Cancelled on cancel)
    thread: threading.Thread | None = None

    def __deepcopy__(self, memo: dict) -> "TrainingRun":
        return self  # a handle on a live run: gr.State must share it, not copy it

    def start(self, work: Callable | None = None, **arguments: Any) -> None:
        """Run `work` (default `transfer.fit.fit`; `transfer.compare.compare` takes the same progress
        and should_stop) with `arguments` in the run's thread."""
        if work is None:
            from transfer.fit import fit as work
        self.thread = threading.Thread(target=self._work, args=(work,), kwargs=arguments,
                                       name="fit" if work.__name__ == "fit" else work.__name__, daemon=True)
        self.thread.start()

    def _work(self, work: Callable, **arguments: Any) -> None:
        try:
            self.result = work(**arguments, progress=self.events.put, should_stop=self.stop.is_set)
        except Exception as error:  # handed to the UI thread, which reports it
            self.error = error

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def reports(self, wait: float) -> list[Progress]:
        """Every progress report so far, waiting up to `wait` seconds for the first."""
        try:
            found = [self.events.get(timeout=wait)]
        except queue.Empty:
            return []
        while not self.events.empty():
            found.append(self.events.get_nowait())
        return found


def stop_run(run: TrainingRun | None) -> None:
    """gr.State's delete callback: a closed page stops its fit (nothing is saved)."""
    if isinstance(run, TrainingRun):
        run.stop.set()


CURVE_METRICS = {"train_loss": "training", "val_loss": "validation", "val_accuracy": "accuracy"}
LOSS_COLOURS = {"training": "#2563eb", "validation": "#ea580c"}  # named in the plot's label (see below)
SPLIT_COLOURS = {"train": "#2563eb", "val": "#ea580c", "test": "#16a34a"}


@dataclass
class TrainingCurve:
    """Per-epoch metrics of every phase, numbered one after another, for the live plots."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    epochs: int = 0

    def add(self, event: Progress) -> bool:
        if event.stage == "train" or event.epoch is None or not event.metrics:
            return False  # per-batch reports move the progress bar only
        self.epochs += 1
        for key, label in CURVE_METRICS.items():
            if event.metrics.get(key) is not None:
                self.rows.append({"epoch": self.epochs, "value": round(float(event.metrics[key]), 4),
                                  "metric": label, "phase": _stage_label(event.stage)})
        return True

    def frame(self, *metrics: str) -> pd.DataFrame | None:
        """Rows of `metrics`; None until there are some (an empty frame fixes a plot's axes to wrong types)."""
        rows = [row for row in self.rows if row["metric"] in metrics]
        return pd.DataFrame(rows, columns=["epoch", "value", "metric", "phase"]) if rows else None

    def plots(self) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        """(validation accuracy, training and validation loss).

        The loss plot waits until both losses have a point: gradio's plots never show a series
        that first appears in a later update (the validation loss of "epoch 0" comes alone)."""
        losses = self.frame(*LOSS_COLOURS)
        complete = losses is not None and losses["metric"].nunique() == len(LOSS_COLOURS)
        return self.frame("accuracy"), losses if complete else None


STAGE_LABELS = {
    "start": "Starting", "read": "Reading images", "features": "Computing features (frozen backbone)",
    "head": "Training the new head", "search": "Choosing where to cut the backbone",
    "warm-up": "Warming up the new head", "train": "Training every layer", "epoch": "Checking on validation images",
    "evaluate": "Evaluating", "save": "Saving to the zoo", "text": "Encoding the texts",
    "fusion head": "Training the image+text head",
}


def _stage_label(stage: str) -> str:
    if stage.startswith("search stage"):
        return f"Trying the cut after stage {stage.removeprefix('search stage ').strip()}"
    return STAGE_LABELS.get(stage, stage.capitalize())


def _stage_unit(stage: str) -> str:
    if stage in ("read", "features"):
        return "images"
    if stage == "train":
        return "batches"
    return "epochs" if stage in ("head", "warm-up", "epoch", "fusion head") or stage.startswith("search") else "steps"


def _status_text(event: Progress | None, started: float, estimate: float | None) -> str:
    elapsed = time.monotonic() - started
    if event is None:
        return f"**Starting…** ({elapsed:.0f} s)"
    parts = [f"**{_stage_label(event.stage)}**"]
    if event.epoch is not None:
        parts.append(f"epoch {event.epoch}")
    elif event.total > 1:
        parts.append(f"{event.done}/{event.total}")
    if event.metrics.get("val_accuracy") is not None:
        parts.append(f"validation accuracy {event.metrics['val_accuracy']:.1%}")
    parts.append(f"{elapsed:.0f} s elapsed")
    left = event.eta_seconds if event.eta_seconds is not None else (estimate - elapsed if estimate else None)
    if left is not None and left > 1:
        parts.append(f"about {_duration(left)} left")
    return " · ".join(parts)


@friendly_errors
def train_model(zip_path, backbone, strategy, name, image_size, epochs, batch_size, max_seconds,
                run: TrainingRun | None, profile: gr.OAuthProfile | None, progress=gr.Progress()):
    """Fine-tune on the uploaded zip, yielding live status and curve; saves to the zoo at the end.

    run: the page's run, made when Train was clicked (so Cancel works while the fit waits in the
    queue); API calls come without one. Yields (status, accuracy plot, loss plot, results,
    per-class table, confusion matrix, run, trained name)."""
    config = app_config()
    settings = FitSettings.from_widgets(backbone, strategy, name, image_size, epochs, batch_size, max_seconds)
    if not (settings.backbone in BUNDLED or settings.backbone.startswith("zoo:")):
        # a Hub download would use the Space's token; a file path would read the server's disk
        require_owner(f"fine-tune from '{settings.backbone}' (visitors: {', '.join(BUNDLED)} or zoo:NAME)",
                      profile, config)
    dataset = open_upload(zip_path, config)
    if settings.name and settings.name in {entry.name for entry in list_entries()}:
        raise gr.Error(f"A model named '{settings.name}' is already in the zoo; choose another name "
                       "(or leave the name empty for an automatic one).")
    estimate = None if settings.strategy == AUTO else estimate_seconds(
        settings.strategy, num_train=len(dataset.train), num_eval=len(dataset.val) + len(dataset.test),
        image_size=settings.image_size, epochs=settings.epochs, architecture=_architecture(settings.backbone))
    hidden = gr.update(value=None, visible=False)
    if not isinstance(run, TrainingRun) or run.thread is not None:
        run = TrainingRun()
    elif run.stop.is_set():  # cancelled while waiting in the queue
        yield "**Cancelled.** Nothing was saved.", None, None, "", hidden, hidden, None, None
        return
    curve, started = TrainingCurve(), time.monotonic()
    run.start(data=dataset, backbone=settings.backbone, strategy=settings.strategy, name=settings.name,
              epochs=settings.epochs, image_size=settings.image_size, batch_size=settings.batch_size,
              max_seconds=config.time_budget(settings.max_seconds))
    progress(0, desc="Starting")
    yield _status_text(None, started, estimate), None, None, "", hidden, hidden, run, None
    last, shown, new_points = None, time.monotonic(), False
    try:
        while run.running or not run.events.empty():
            reports = run.reports(wait=0.25)
            for event in reports:
                new_points |= curve.add(event)
            if reports:
                last = reports[-1]
                progress((last.done, max(last.total, 1)), desc=_stage_label(last.stage), unit=_stage_unit(last.stage))
            since = time.monotonic() - shown
            if (new_points and since > 0.4) or since > 1.0:  # a head on cached features does 50 epochs a second
                plots = curve.plots() if new_points else (gr.skip(), gr.skip())
                yield _status_text(last, started, estimate), *plots, *[gr.skip()] * 5
                shown, new_points = time.monotonic(), False
        run.thread.join()
    finally:
        if run.running:  # the page went away mid-fit: stop, save nothing
            run.stop.set()
    if isinstance(run.error, Cancelled):
        yield "**Cancelled.** Nothing was saved.", *curve.plots(), "", hidden, hidden, None, None
        return
    if run.error is not None:
        raise run.error
    result = run.result
    yield (f"**Saved as `{result.name}`** in {result.train_seconds:.1f} s. It is selected in the Predict tab.",
           *curve.plots(), _results_text(result), gr.update(value=_per_class_frame(result.metrics), visible=True),
           gr.update(value=_confusion_table(result), visible=True), None, result.name)


def _cancel(run: TrainingRun | None, idle: str, stopping: str) -> str:
    """Stop `run` (queued or running); the message says which, or `idle` when there is nothing to stop."""
    if not isinstance(run, TrainingRun) or run.stop.is_set() or (run.thread is not None and not run.running):
        return idle
    run.stop.set()
    if run.thread is None:
        return "**Cancelled** before it started. Nothing was saved."
    return stopping


@friendly_errors
def cancel_training(run: TrainingRun | None) -> str:
    return _cancel(run, "Nothing is training right now.", "**Stopping…** (within a batch or two; nothing will be saved)")


@friendly_errors
def cancel_compare(run: TrainingRun | None) -> str:
    return _cancel(run, "No comparison is running right now.", "**Stopping…** (the runs that finished stay in the zoo)")


def _results_text(result) -> str:
    metrics = result.metrics
    where = ("held-out test images" if result.metrics_split == "test"
             else "validation images (they also chose when to stop, so this is slightly optimistic)")
    lines = [
        f"### {metrics['accuracy']:.1%} accuracy · macro-F1 {metrics['macro_f1']:.3f}",
        f"On {metrics['count']} {where}.",
        f"**{result.strategy}** on `{result.backbone}` at {result.image_size} px: trained "
        f"{result.trainable_parameters:,} of {result.total_parameters:,} parameters on {result.num_train} images "
        f"in {result.train_seconds:.1f} s.",
    ]
    if result.advice:
        lines.append(f"Strategy **auto** chose **{result.strategy}**: " + " ".join(result.advice.get("reasons", [])))
    if result.ablation:
        lines.append(_ablation_text(result.ablation))
    if result.details.get("cut_stage") is not None:
        lines.append(f"The backbone was cut after stage {result.details['cut_stage']} (best on validation).")
    if result.stopped_by_budget:
        lines.append("**Warning:** the time budget ran out: training stopped early and kept its best epoch.")
    lines += [f"**Warning:** {warning}" for warning in result.warnings]
    if result.skipped:
        lines.append(f"{len(result.skipped)} file(s) were skipped (listed under the dataset summary).")
    return "\n\n".join(lines)


def _ablation_text(ablation: dict[str, float]) -> str:
    """Image+text models: validation accuracy from each input alone and from both."""
    return ("**Image and text** (validation accuracy; the model answers from either alone too):\n\n"
            "| image only | text only | image and text |\n|---|---|---|\n"
            f"| {ablation['image_only']:.1%} | {ablation['text_only']:.1%} | {ablation['image_and_text']:.1%} |")


def _per_class_frame(metrics: dict) -> pd.DataFrame:
    rows = [{"class": label, **values} for label, values in metrics["per_class"].items()]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def _confusion_table(result):
    """The confusion matrix as a table: rows are the true classes, columns the predictions.

    Shaded by share of the row: the diagonal (right) in green, mistakes in red."""
    labels, matrix = result.classes, result.metrics["confusion_matrix"]
    frame = pd.DataFrame(matrix, columns=labels)
    frame.insert(0, "true ↓ / predicted →", labels)

    def shade(table: pd.DataFrame) -> pd.DataFrame:
        styles = pd.DataFrame("", index=table.index, columns=table.columns)
        for row, counts in enumerate(matrix):
            total = max(1, sum(counts))
            for column, count in enumerate(counts):
                if count:
                    alpha = 0.15 + 0.75 * count / total
                    colour = "22, 163, 74" if row == column else "220, 38, 38"
                    styles.iloc[row, column + 1] = f"background-color: rgba({colour}, {alpha:.2f})"
        return styles

    return frame.style.apply(shade, axis=None)


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


# --- Compare tab -------------------------------------------------------------------------------------

COMPARE_COLUMNS = ["strategy", "accuracy", "macro-F1", "seconds", "trainable parameters", "model", "note"]


@friendly_errors
def compare_strategies(zip_path: str | None, backbone: str, budget_seconds, image_size, name: str,
                       run: TrainingRun | None, profile: gr.OAuthProfile | None, progress=gr.Progress()):
    """All four strategies on the uploaded zip, one split, one time budget (`transfer.compare`), in a
    `TrainingRun` thread so Cancel (and closing the page) stops it; the runs that finished stay.

    Yields (status, summary, table, chart PNG path, run, the best model's name)."""
    from transfer.compare import compare

    config = app_config()
    backbone = (backbone or "").strip() or DEFAULT_BACKBONE
    if not (backbone in BUNDLED or backbone.startswith("zoo:")):
        require_owner(f"compare from '{backbone}' (visitors: {', '.join(BUNDLED)} or zoo:NAME)", profile, config)
    budget = config.time_budget(_budget(budget_seconds))
    size = _whole(image_size, "Image size", 16, 1024)
    name = (name or "").strip() or None
    if name is not None:
        validate_name(name)
    dataset = open_upload(zip_path, config)
    if not isinstance(run, TrainingRun) or run.thread is not None:
        run = TrainingRun()
    elif run.stop.is_set():  # cancelled while waiting in the queue
        yield "**Cancelled** before it started. Nothing was saved.", "", gr.skip(), gr.skip(), None, None
        return
    started = time.monotonic()
    run.start(compare, data=dataset, backbone=backbone, budget_seconds=budget, image_size=size, name=name)
    progress(0, desc="Measuring the data (auto's advice)")
    yield "**Starting…**", "", gr.skip(), gr.skip(), run, None
    current, announced, shown, finished = "auto's advice", None, time.monotonic(), []
    try:
        while run.running or not run.events.empty():
            reports = run.reports(wait=0.25)
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
                    progress((last.done, max(last.total, 1)), desc=f"{current}: {_stage_label(last.stage)}",
                             unit=_stage_unit(last.stage))
            # the status when a run starts or finishes, and once a second in between
            if grown or current != announced or time.monotonic() - shown > 1.0:
                yield (f"**Running {current}** · {time.monotonic() - started:.0f} s elapsed", "",
                       _partial_frame(finished) if grown else gr.skip(), *[gr.skip()] * 3)
                announced, shown = current, time.monotonic()
        run.thread.join()
    finally:
        if run.running:  # the page went away: stop; the runs that finished stay in the zoo
            run.stop.set()
    if isinstance(run.error, Cancelled):
        yield ("**Cancelled.** The runs that had finished are in the zoo; nothing of the one that was running "
               "was saved.", "", gr.skip(), gr.skip(), None, None)
        return
    if run.error is not None:
        raise run.error
    comparison = run.result
    yield ("**Done.**", _comparison_summary(comparison), _comparison_frame(comparison),
           str(comparison.chart) if comparison.chart else None, None,
           comparison.best.name if comparison.best else None)


def _comparison_frame(comparison) -> pd.DataFrame:
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


def _partial_frame(finished: list[dict]) -> pd.DataFrame:
    """The rows of the runs that finished so far (the full table, with its notes, comes at the end)."""
    rows = [{"strategy": row["strategy"], "accuracy": row["accuracy"], "macro-F1": row["macro_f1"],
             "seconds": row["seconds"], "trainable parameters": row["trainable_parameters"],
             "model": row["model"] or "", "note": f"failed: {row['error']}" if row["error"] else ""}
            for row in finished]
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def _comparison_summary(comparison) -> str:
    best, budget = comparison.best, comparison.budget_seconds
    split = "test" if comparison.num_test else "validation"
    return (f"**{comparison.id}**: {comparison.dataset}, the same split for every run ({comparison.num_train} "
            f"train / {comparison.num_val} val / {comparison.num_test} test images; {split} metrics), "
            f"{comparison.seconds:.0f} s in all"
            + (f" within a {_duration(budget)} budget." if budget else ", no time budget.")
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
    """Compare greys out, its Cancel lights up, the run exists at once (see `training_started`)."""
    return gr.update(interactive=False), gr.update(interactive=True), gr.update(visible=True), TrainingRun()


def training_started():
    """Train greys out, Cancel lights up, the progress bar and the curves appear (`after_training`
    undoes it), and the run exists at once, so Cancel works while it waits in the queue."""
    return (gr.update(interactive=False), gr.update(interactive=True), gr.update(visible=True),
            gr.update(visible=True), TrainingRun())


def backbone_choices():
    return gr.update(choices=image_backbones())


def show():
    return gr.update(visible=True)


def hide():
    return gr.update(visible=False)


# --- layout -------------------------------------------------------------------------------------------

CSS = """
.gradio-container { max-width: 1280px !important; width: 100%; margin: auto; }
#app-title h1 { margin-bottom: 0; }
#train-progress, #compare-progress { min-height: 64px; }
"""


def launch_options() -> dict[str, Any]:
    """What `demo.launch` needs besides host and port (the tests launch with the same options)."""
    config = app_config()
    return {
        "theme": gr.themes.Soft(primary_hue="indigo"),
        "css": CSS,
        "max_file_size": f"{config.max_upload_mb}mb",
        "allowed_paths": [str(ASSETS)],
        "show_error": True,
    }


INTERNAL = {"api_visibility": "private"}  # page plumbing, not part of the API
PREDICTING = {"concurrency_id": "predict", "concurrency_limit": 4}  # answers while a fit runs
TRAINING = {"concurrency_id": "training", "concurrency_limit": 1}  # fits wait their turn, one at a time


def example_images() -> list[list[str]]:
    """The Predict tab's examples: the photos, and a few digits of the example dataset."""
    photos = sorted((ASSETS / "photos").glob("*.jpg"))
    digits = [sorted((EXAMPLE_DATASET / digit).glob("*.png"))[0] for digit in ("3", "7")]
    return [[str(path)] for path in [*photos, *digits]]


def build_demo() -> gr.Blocks:
    config = app_config()
    with gr.Blocks(title="Transfer Zoo", delete_cache=(3600, 6 * 3600)) as demo:  # uploads go after 6 h
        with gr.Row(equal_height=True):
            gr.Markdown("# Transfer Zoo\nFine-tune a pretrained image model on your own labelled pictures "
                        "in one click, keep it in the zoo, and try it here.", elem_id="app-title")
            if config.oauth_ready:
                gr.LoginButton(scale=0, min_width=220)
        run_state = gr.State(None, delete_callback=stop_run)
        compare_run_state = gr.State(None, delete_callback=stop_run)  # a comparison, apart from a fit
        facts_state = gr.State(None)
        advice_state = gr.State(None)  # the advice for the current upload and settings (advise_upload)
        best_state = gr.State(None)  # the best model of the last comparison
        trained_state = gr.State(None)

        with gr.Tabs():
            # --- Zoo ---
            with gr.Tab("Zoo", id="zoo"):
                with gr.Row():
                    zoo_query = gr.Textbox(placeholder="Search names, backbones, strategies or classes",
                                           show_label=False, scale=4, elem_id="zoo-search")
                    zoo_refresh = gr.Button("Refresh", scale=0, min_width=100)
                zoo_table = gr.Dataframe(value=pd.DataFrame(columns=ZOO_COLUMNS), interactive=False,
                                         column_widths=["28%", "17%", "14%", "17%", "11%", "13%"],
                                         label="Models (click a row to select it)", elem_id="zoo-table",
                                         max_height=360, wrap=True)
                with gr.Row():
                    with gr.Column(scale=3):
                        zoo_model = gr.Dropdown(label="Selected model", choices=[], allow_custom_value=True, elem_id="zoo-model")
                        card = gr.Markdown("Select a model in the table to see its card.", elem_id="model-card",
                                           container=True, max_height=520)
                    with gr.Column(scale=2):
                        with gr.Accordion("Manage", open=False):
                            if config.on_space:
                                gr.Markdown("Deleting, renaming and the Hub need the Space owner's sign-in.")
                            new_name = gr.Textbox(label="New name", placeholder="letters, digits, . _ -")
                            rename_button = gr.Button("Rename")
                            delete_button = gr.Button("Delete…", variant="stop")
                            with gr.Row(visible=False) as confirm_row:
                                confirm_delete = gr.Button("Yes, delete it", variant="stop", min_width=80)
                                keep_model = gr.Button("Keep it", min_width=80)
                            manage_status = gr.Markdown()
                        with gr.Accordion("Export / import", open=False, visible=can_export()):
                            export_button = gr.Button("Export selected model (.zip)")
                            export_file = gr.File(label="Download", interactive=False, elem_id="export-file")
                            import_file = gr.File(label="Model .zip to import", file_types=[".zip"],
                                                  elem_id="import-zip")
                            import_name = gr.Textbox(label="Import as", placeholder="empty: the name in the zip")
                            import_button = gr.Button("Import into the zoo")
                            import_status = gr.Markdown()
                        with gr.Accordion("Hugging Face Hub", open=False, visible=False) as hub_box:
                            push_repo = gr.Textbox(label="Push to repository",
                                                   placeholder="owner/name (empty: your namespace, the model's name)")
                            push_private = gr.Checkbox(label="Private repository", value=True)
                            push_button = gr.Button("Push selected model")
                            pull_repo = gr.Textbox(label="Pull repository", placeholder="owner/name")
                            pull_name = gr.Textbox(label="Save as", placeholder="empty: the repository's name")
                            pull_button = gr.Button("Pull into the zoo")
                            hub_namespace = gr.Textbox(label="List models of", placeholder="empty: yours")
                            hub_list_button = gr.Button("List Hub models")
                            hub_table = gr.Dataframe(interactive=False, visible=True, label="Hub models")
                            hub_status = gr.Markdown()

            # --- Predict ---
            with gr.Tab("Predict", id="predict"):
                with gr.Row():
                    with gr.Column():
                        predict_model = gr.Dropdown(label="Model", choices=[], allow_custom_value=True,
                                                    elem_id="predict-model")
                        image = gr.Image(type="filepath", label="Image", height=320, elem_id="predict-image",
                                         sources=["upload", "clipboard", "webcam"])
                        text = gr.Textbox("", label="Text beside the image", visible=False, elem_id="predict-text")
                        top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k labels")
                        predict_button = gr.Button("Predict", variant="primary", elem_id="predict-button")
                        gr.Examples(example_images(), inputs=[image], label="Examples")
                    with gr.Column():
                        label = gr.Label(label="Prediction", elem_id="prediction")
                        with gr.Accordion("Several images at once", open=False):
                            batch_files = gr.File(file_count="multiple", file_types=["image"], label="Images")
                            batch_button = gr.Button("Predict all")
                            batch_table = gr.Dataframe(interactive=False, label="Predictions")

            # --- Fine-tune ---
            with gr.Tab("Fine-tune", id="fine-tune"):
                with gr.Row():
                    with gr.Column(scale=1):
                        gr.Markdown("### 1. Data\nA **.zip** of one folder per class (`cats/…`, `dogs/…`), "
                                    "or with `train/`, `val/` (and `test/`) folders around them.")
                        dataset_file = gr.File(label="Dataset (.zip)", file_types=[".zip"], elem_id="dataset-zip")
                        example_button = gr.Button("Try the example dataset (handwritten digits)",
                                                   elem_id="example-dataset")
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
                                                   elem_id="image-size", info="0: the strategy's default "
                                                   "(the backbone's own, 224 px for lite0; 128 px when all layers train)")
                            epochs = gr.Number(label="Epochs", value=0, precision=0, minimum=0, elem_id="epochs",
                                               info="0: the strategy's default")
                            batch_size = gr.Slider(2, 128, value=32, step=1, label="Batch size")
                            max_seconds = gr.Number(label="Time budget (seconds)", value=0, minimum=0,
                                                    elem_id="max-seconds",
                                                    info="0: none" + (f" (this app stops every fit after "
                                                                      f"{config.max_train_seconds:.0f} s)"
                                                                      if config.max_train_seconds else ""))
                        estimate = gr.Markdown("Load a dataset to see how long training will take.",
                                               elem_id="estimate")
                        with gr.Row():
                            train_button = gr.Button("Train", variant="primary", elem_id="train-button")
                            cancel_button = gr.Button("Cancel", variant="stop", interactive=False,
                                                      elem_id="cancel-button")
                    with gr.Column(scale=2):
                        summary = gr.Markdown(elem_id="dataset-summary")
                        counts_plot = gr.BarPlot(None, x="class", y="images", color="split",
                                                 color_map=SPLIT_COLOURS, height=220, elem_id="class-counts",
                                                 label="Images per class: training (blue), validation (orange), "
                                                       "test (green)")
                        thumbs = gr.Gallery(label="A few images per class", columns=8, height=240,
                                            object_fit="contain", allow_preview=False, elem_id="thumbnails")
                        skipped = gr.Dataframe(label="Skipped files", visible=False, interactive=False,
                                               max_height=200)
                        progress_area = gr.Markdown(visible=False, elem_id="train-progress")  # gr.Progress bar
                        status = gr.Markdown(elem_id="train-status")
                        with gr.Row(visible=False) as curves:
                            accuracy_plot = gr.LinePlot(None, x="epoch", y="value", label="Validation accuracy",
                                                        x_title="epoch (all phases)", y_title="accuracy",
                                                        y_lim=[0, 1], height=260, elem_id="accuracy-curve")
                            loss_plot = gr.LinePlot(None, x="epoch", y="value", color="metric", color_map=LOSS_COLOURS,
                                                    label="Loss: training (blue), validation (orange)",
                                                    x_title="epoch (all phases)", y_title="loss", height=260,
                                                    elem_id="loss-curve")
                        results = gr.Markdown(elem_id="results")
                        with gr.Row():
                            per_class = gr.Dataframe(label="Per class", interactive=False, max_height=360,
                                                     visible=False, elem_id="per-class")
                            confusion = gr.Dataframe(label="Confusion matrix (rows: true class)", interactive=False,
                                                     max_height=360, visible=False, elem_id="confusion")

            # --- Compare ---
            with gr.Tab("Compare strategies", id="compare"):
                gr.Markdown("Train all four strategies on the dataset uploaded in the **Fine-tune** tab (with its "
                            "backbone), on the same split and within one time budget, to see which suits it. "
                            "Every run is saved in the zoo as `NAME-STRATEGY`.")
                with gr.Row():
                    compare_budget = gr.Number(label="Time budget for all four (seconds)",
                                               value=min(120, config.max_train_seconds or 120), minimum=0,
                                               elem_id="compare-budget",
                                               info="0: none" + (f" (this app allows at most "
                                                                 f"{config.max_train_seconds:.0f} s)"
                                                                 if config.max_train_seconds else ""))
                    compare_size = gr.Number(label="Image size (px)", value=0, precision=0, minimum=0,
                                             elem_id="compare-image-size", info="0: each strategy's default")
                    compare_name = gr.Textbox(label="Comparison name", elem_id="compare-name",
                                              placeholder="empty: DATASET-DATE-TIME")
                compare_dataset = gr.Markdown("No dataset yet: upload one (or try the example) in the Fine-tune tab.",
                                              elem_id="compare-dataset")
                with gr.Row():
                    compare_button = gr.Button("Compare strategies", variant="primary", elem_id="compare-button",
                                               scale=3)
                    compare_cancel = gr.Button("Cancel", variant="stop", interactive=False,
                                               elem_id="compare-cancel", scale=1)
                compare_progress = gr.Markdown(visible=False, elem_id="compare-progress")  # gr.Progress bar
                compare_status = gr.Markdown(elem_id="compare-status")
                compare_summary = gr.Markdown(elem_id="compare-summary")
                compare_table = gr.Dataframe(value=pd.DataFrame(columns=COMPARE_COLUMNS), interactive=False,
                                             label="Strategies side by side", elem_id="compare-table", wrap=True)
                compare_chart = gr.Image(label="Accuracy and macro-F1", type="filepath", interactive=False,
                                         elem_id="compare-chart", height=280)

        # --- wiring: Zoo ---
        zoo_pickers = [zoo_table, zoo_model, card]
        refresh_inputs = [zoo_query, zoo_model]
        demo.load(refresh_zoo, refresh_inputs, zoo_pickers, api_name="list_zoo")
        demo.load(refresh_models, predict_model, [predict_model, text], api_name="list_predict_models", **INTERNAL)
        demo.load(backbone_choices, None, backbone, api_name="list_backbones", **INTERNAL)
        demo.load(hub_panel, None, hub_box, api_name="hub_panel", **INTERNAL)
        zoo_query.submit(refresh_zoo, refresh_inputs, zoo_pickers, api_name="search_zoo")
        zoo_refresh.click(refresh_zoo, refresh_inputs, zoo_pickers, api_name="refresh_zoo", **INTERNAL)
        zoo_table.select(pick_row, None, zoo_model, api_name="pick_row", **INTERNAL)
        zoo_model.change(model_card, zoo_model, card, api_name="model_card")
        rename_button.click(rename_selected, [zoo_model, new_name], [manage_status, zoo_model],
                            api_name="rename_model").success(
            refresh_zoo, refresh_inputs, zoo_pickers, api_name="refresh_after_rename", **INTERNAL)
        delete_button.click(show, None, confirm_row, api_name="ask_delete", queue=False, **INTERNAL)
        keep_model.click(hide, None, confirm_row, api_name="keep_model", queue=False, **INTERNAL)
        confirm_delete.click(hide, None, confirm_row, api_name="close_delete", queue=False, **INTERNAL)
        confirm_delete.click(delete_model, zoo_model, manage_status, api_name="delete_model").then(
            refresh_zoo, refresh_inputs, zoo_pickers, api_name="refresh_after_delete", **INTERNAL)
        export_button.click(export_selected, zoo_model, export_file, api_name="export_model")
        import_button.click(import_upload, [import_file, import_name], [import_status, zoo_model],
                            api_name="import_model").success(
            refresh_zoo, refresh_inputs, zoo_pickers, api_name="refresh_after_import", **INTERNAL)
        push_button.click(push_to_hub, [zoo_model, push_repo, push_private], hub_status, api_name="push_model")
        pull_button.click(pull_from_hub, [pull_repo, pull_name], [hub_status, zoo_model],
                          api_name="pull_model").success(
            refresh_zoo, refresh_inputs, zoo_pickers, api_name="refresh_after_pull", **INTERNAL)
        hub_list_button.click(hub_models, hub_namespace, hub_table, api_name="list_hub_models")

        # --- wiring: Predict ---
        predict_model.change(model_inputs, predict_model, text, api_name="model_inputs", **INTERNAL)
        predict_button.click(predict_image, [predict_model, image, top_k, text], label, api_name="predict",
                             **PREDICTING)
        image.change(predict_when_ready, [predict_model, image, top_k, text], label, api_name="predict_on_change",
                     **PREDICTING, **INTERNAL)
        text.submit(predict_image, [predict_model, image, top_k, text], label, api_name="predict_on_submit",
                    **PREDICTING, **INTERNAL)
        batch_button.click(predict_images, [predict_model, batch_files, top_k, text], batch_table,
                           api_name="predict_batch", **PREDICTING)

        # --- wiring: Fine-tune ---
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
              advise_upload, [dataset_file, backbone, image_size, epochs, max_seconds, strategy],
              [advice, advice_state],
              api_name="advise", trigger_mode="always_last", concurrency_id="advise", concurrency_limit=1)
        train_button.click(
            training_started, None, [train_button, cancel_button, progress_area, curves, run_state],
            api_name="lock_train", queue=False, **INTERNAL,
        ).then(
            train_model,
            [dataset_file, backbone, strategy, model_name, image_size, epochs, batch_size, max_seconds, run_state],
            [status, accuracy_plot, loss_plot, results, per_class, confusion, run_state, trained_state],
            api_name="train", show_progress_on=[progress_area], **TRAINING,
        ).then(
            after_training, [trained_state, zoo_query],
            [zoo_table, predict_model, zoo_model, card, text, backbone, train_button, cancel_button, progress_area,
             run_state],
            api_name="after_training", **INTERNAL,
        )
        cancel_button.click(cancel_training, run_state, status, api_name="cancel", queue=False)

        # --- wiring: Compare ---
        facts_state.change(compare_dataset_text, facts_state, compare_dataset, api_name="compare_dataset",
                           **INTERNAL)
        compare_button.click(
            compare_started, None, [compare_button, compare_cancel, compare_progress, compare_run_state],
            api_name="lock_compare", queue=False, **INTERNAL,
        ).then(
            compare_strategies,
            [dataset_file, backbone, compare_budget, compare_size, compare_name, compare_run_state],
            [compare_status, compare_summary, compare_table, compare_chart, compare_run_state, best_state],
            api_name="compare", show_progress_on=[compare_progress], **TRAINING,
        ).then(
            after_compare, [best_state, zoo_query],
            [zoo_table, predict_model, zoo_model, card, text, backbone, compare_button, compare_cancel,
             compare_progress, compare_run_state],
            api_name="after_compare", **INTERNAL,
        )
        compare_cancel.click(cancel_compare, compare_run_state, compare_status, api_name="cancel_compare",
                             queue=False)
    demo.queue(default_concurrency_limit=2)  # events without their own limit; see PREDICTING, TRAINING
    return demo


demo = build_demo()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests
    demo.launch(
        # a Space must listen on every interface; locally only this machine (GRADIO_SERVER_NAME overrides)
        server_name=os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if app_config().on_space else "127.0.0.1"),
        **launch_options(),
    )
