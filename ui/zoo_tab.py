"""The Zoo tab: the models table and search, a model's card, manage (rename, delete), export (a zip,
or an ONNX file) and import, and the Hugging Face Hub (push, pull, list; shown only with a token, on
a Space only to its owner)."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from ui.config import app_config, require_owner
from ui.handlers import INTERNAL, friendly_errors, hide, show
from ui.views import accuracy_text, classes_text
from zoo import zoo_dir
from zoo.archives import export_model, export_onnx, import_model
from zoo.catalog import list_entries, read_entry, remove_model, rename_model

ZOO_COLUMNS = ["name", "backbone", "strategy", "classes", "accuracy", "created"]
HUB_COLUMNS = ["repo_id", "strategy", "private", "downloads", "likes", "last_modified"]
EXPORT_KEEP_SECONDS = 3600  # exported zips wait this long for their download, then go


# --- the zoo's contents ---------------------------------------------------------------------------


def zoo_rows(query: str = "") -> pd.DataFrame:
    """The zoo table: one row per model, newest first, filtered by `query`."""
    rows = []
    for entry in list_entries(query=(query or "").strip() or None):
        summary = entry.summary()
        rows.append({
            "name": entry.name,
            "backbone": summary["backbone"] or "",
            "strategy": f"damaged: {entry.damaged}" if entry.damaged else (summary["strategy"] or ""),
            "classes": classes_text(summary["classes"]),
            "accuracy": accuracy_text(summary["accuracy"], summary["metrics_split"]),
            "created": (summary["created"] or "")[:16].replace("T", " "),
        })
    return pd.DataFrame(rows, columns=ZOO_COLUMNS)


def model_names() -> list[str]:
    """Models that can be used (damaged folders are listed in the table, not offered)."""
    return [entry.name for entry in list_entries() if not entry.damaged]


def still_there(selected: str | None, names: list[str]) -> str | None:
    """The selection if it still exists, else the newest model."""
    return selected if selected in names else (names[0] if names else None)


@friendly_errors
def refresh_zoo(query: str, selected: str | None):
    """The Zoo tab after the zoo changed or on page load: table, selected model, its card."""
    names = model_names()
    keep = still_there(selected, names)
    return zoo_rows(query), gr.update(choices=names, value=keep), model_card(keep)


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


# --- manage, export, import ------------------------------------------------------------------------


@friendly_errors
def delete_model(name: str | None, profile: gr.OAuthProfile | None) -> str:
    require_owner("delete models", profile, app_config())
    if not name:
        raise gr.Error("Select the model to delete first.")
    builtin = read_entry(name).summary().get("builtin")
    remove_model(name)
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


@friendly_errors
def export_selected(name: str | None) -> str:
    """The selected model as one zip to download (anyone may: it is what the page already serves)."""
    if not name:
        raise gr.Error("Select the model to export first.")
    return str(export_model(name, output=_export_folder() / f"{name}.zip"))


@friendly_errors
def export_selected_onnx(name: str | None) -> str:
    """The selected model as an ONNX file to download, checked against PyTorch (`zoo.onnx_export`)."""
    if not name:
        raise gr.Error("Select the model to export first.")
    return str(export_onnx(name, output=_export_folder() / f"{name}.onnx").path)


def _export_folder() -> Path:
    """A fresh folder for one download; those older than EXPORT_KEEP_SECONDS are swept away."""
    exports = zoo_dir() / "cache" / "exports"
    for old in [*exports.glob("*/*.zip"), *exports.glob("*/*.onnx")]:
        if time.time() - old.stat().st_mtime > EXPORT_KEEP_SECONDS:
            shutil.rmtree(old.parent, ignore_errors=True)
    exports.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=exports))


@friendly_errors
def import_upload(archive: str | None, name: str, profile: gr.OAuthProfile | None) -> tuple[str, str]:
    """Add a model zip (as Export writes it) to the zoo; on a Space, the owner only."""
    require_owner("import models", profile, app_config())
    if not archive:
        raise gr.Error("Upload a model .zip first (one made with Export).")
    imported = import_model(archive, name=(name or "").strip() or None)
    return f"Imported **{imported}**.", imported


# --- the Hub ----------------------------------------------------------------------------------------


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


@friendly_errors
def hub_models(namespace: str, profile: gr.OAuthProfile | None) -> pd.DataFrame:
    require_owner("list Hub models with the Space's token", profile, app_config())
    hub = _hub()
    rows = hub.list_hub_models((namespace or "").strip() or None, token=hub.hub_token())
    return pd.DataFrame(rows, columns=HUB_COLUMNS)


# --- layout and wiring -----------------------------------------------------------------------------


@dataclass
class ZooTab:
    """The widgets other tabs update (a new model selects itself here)."""

    query: gr.Textbox
    table: gr.Dataframe
    model: gr.Dropdown
    card: gr.Markdown

    @property
    def pickers(self) -> list:
        return [self.table, self.model, self.card]


def build(demo: gr.Blocks, on_space: bool) -> ZooTab:
    """The tab's widgets and its own events (inside `demo`, within a `gr.Tabs`)."""
    with gr.Tab("Zoo", id="zoo"):
        with gr.Row():
            query = gr.Textbox(placeholder="Search names, backbones, strategies or classes",
                               show_label=False, scale=4, elem_id="zoo-search")
            refresh = gr.Button("Refresh", scale=0, min_width=100)
        table = gr.Dataframe(value=pd.DataFrame(columns=ZOO_COLUMNS), interactive=False,
                             column_widths=["28%", "17%", "14%", "17%", "11%", "13%"],
                             label="Models (click a row to select it)", elem_id="zoo-table", max_height=360, wrap=True)
        with gr.Row():
            with gr.Column(scale=3):
                model = gr.Dropdown(label="Selected model", choices=[], allow_custom_value=True, elem_id="zoo-model")
                card = gr.Markdown("Select a model in the table to see its card.", elem_id="model-card",
                                   container=True, max_height=520)
            with gr.Column(scale=2):
                with gr.Accordion("Manage", open=False):
                    if on_space:
                        gr.Markdown("Deleting, renaming and the Hub need the Space owner's sign-in.")
                    new_name = gr.Textbox(label="New name", placeholder="letters, digits, . _ -")
                    rename_button = gr.Button("Rename")
                    delete_button = gr.Button("Delete…", variant="stop")
                    with gr.Row(visible=False) as confirm_row:
                        confirm_delete = gr.Button("Yes, delete it", variant="stop", min_width=80)
                        keep_model = gr.Button("Keep it", min_width=80)
                    manage_status = gr.Markdown()
                with gr.Accordion("Export / import", open=False):
                    export_button = gr.Button("Export selected model (.zip)")
                    export_onnx_button = gr.Button("Export selected model as ONNX (.onnx)",
                                                   elem_id="export-onnx")
                    export_file = gr.File(label="Download", interactive=False, elem_id="export-file")
                    import_file = gr.File(label="Model .zip to import", file_types=[".zip"], elem_id="import-zip")
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

    tab = ZooTab(query=query, table=table, model=model, card=card)
    pickers, inputs = tab.pickers, [query, model]
    demo.load(refresh_zoo, inputs, pickers, api_name="list_zoo")
    demo.load(hub_panel, None, hub_box, api_name="hub_panel", **INTERNAL)
    query.submit(refresh_zoo, inputs, pickers, api_name="search_zoo")
    refresh.click(refresh_zoo, inputs, pickers, api_name="refresh_zoo", **INTERNAL)
    table.select(pick_row, None, model, api_name="pick_row", **INTERNAL)
    model.change(model_card, model, card, api_name="model_card")
    rename_button.click(rename_selected, [model, new_name], [manage_status, model], api_name="rename_model").success(
        refresh_zoo, inputs, pickers, api_name="refresh_after_rename", **INTERNAL)
    delete_button.click(show, None, confirm_row, api_name="ask_delete", queue=False, **INTERNAL)
    keep_model.click(hide, None, confirm_row, api_name="keep_model", queue=False, **INTERNAL)
    confirm_delete.click(hide, None, confirm_row, api_name="close_delete", queue=False, **INTERNAL)
    confirm_delete.click(delete_model, model, manage_status, api_name="delete_model").then(
        refresh_zoo, inputs, pickers, api_name="refresh_after_delete", **INTERNAL)
    export_button.click(export_selected, model, export_file, api_name="export_model")
    export_onnx_button.click(export_selected_onnx, model, export_file, api_name="export_onnx")
    import_button.click(import_upload, [import_file, import_name], [import_status, model],
                        api_name="import_model").success(
        refresh_zoo, inputs, pickers, api_name="refresh_after_import", **INTERNAL)
    push_button.click(push_to_hub, [model, push_repo, push_private], hub_status, api_name="push_model")
    pull_button.click(pull_from_hub, [pull_repo, pull_name], [hub_status, model], api_name="pull_model").success(
        refresh_zoo, inputs, pickers, api_name="refresh_after_pull", **INTERNAL)
    hub_list_button.click(hub_models, hub_namespace, hub_table, api_name="list_hub_models")
    return tab
