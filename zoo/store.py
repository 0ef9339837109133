"""Model folders on disk: what one holds, writing one atomically, reading and checking one.

    <zoo>/<name>/config.json        timm-style config (architecture, label_names, pretrained_cfg)
    <zoo>/<name>/model.safetensors  weights
    <zoo>/<name>/README.md          model card
    <zoo>/<name>/transfer.json      how it was made (format_version, spec, strategy, data, metrics...)

A save writes everything into a hidden staging folder beside the target, flushes it to disk, then
renames it into place in one step (`zoo.files.publish`): a crash leaves either the old model or the
new one, never half. Two saves racing for one name: the first rename wins, the second finds the
name taken and is refused. Replacing (overwrite) swaps the two folders in one step, so a reader
sees the old model or the new one. Nothing ever edits a model's files in place except its card.

Reading a folder never fails on a damaged one; it reports it as damaged, with the reason (missing
files, unreadable JSON, a truncated weights file, a format this code does not know).

This module knows one folder at a time. The zoo as a whole (saved models merged with the built-ins,
listing, renaming, removing, loading) is `zoo.catalog`; export and import are `zoo.archives`.
Nothing here needs PyTorch except writing weights.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zoo import ZooError, zoo_dir
from zoo.files import (
    folder_size,
    fsync,
    json_default,
    publish,
    safetensors_header,
    staging_folder,
    write_text,
)
from zoo.spec import ModelSpec
from zoo.weights import BUNDLED

FORMAT_VERSION = 1
MODEL_FILES = ("config.json", "model.safetensors", "README.md", "transfer.json")
REQUIRED_FILES = ("config.json", "model.safetensors", "transfer.json")  # a card can be written again
MAX_JSON_BYTES = 64 << 20  # config.json / transfer.json / README.md: far above any real one
MAX_WEIGHTS_BYTES = 8 << 30  # an imported model.safetensors
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


@dataclass
class ZooEntry:
    """One model as the listing sees it. `damaged` holds the reason when it cannot be used.

    Built-in entries (`builtin=True`) are the bundled ImageNet classifiers: their `path` holds
    their description (transfer.json, config.json, README.md), their weights come from the
    installed package."""

    name: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)  # transfer.json
    damaged: str | None = None
    builtin: bool = False

    @property
    def spec(self) -> ModelSpec:
        if self.damaged:
            raise ZooError(f"Model '{self.name}' is damaged: {self.damaged}")
        return ModelSpec.from_dict(self.info["spec"])

    @property
    def metrics(self) -> dict[str, Any]:
        return self.info.get("metrics") or {}

    def summary(self) -> dict[str, Any]:
        """The listing's row: what `python -m zoo list --json` prints per model."""
        spec = self.info.get("spec") or {}
        data = self.info.get("data") or {}
        return {
            "name": self.name,
            "backbone": (self.info.get("backbone") or {}).get("name") or spec.get("architecture"),
            "strategy": self.info.get("strategy"),
            "classes": spec.get("label_names", []),
            "num_classes": len(spec.get("label_names", [])),
            "accuracy": self.metrics.get("accuracy"),
            "macro_f1": self.metrics.get("macro_f1"),
            "metrics_split": self.info.get("metrics_split"),
            "num_train": data.get("num_train"),
            "size_bytes": self.info.get("weights_bytes", 0) if self.builtin else folder_size(self.path),
            "created": self.info.get("created"),
            "takes_text": spec.get("text") is not None,
            "builtin": self.builtin,
            "damaged": self.damaged,
            "path": str(self.path),
        }


def validate_name(name: str) -> str:
    """A model name is a folder name and a Hub repo name: letters, digits, '.', '_' and '-'."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name) or ".." in name or name.endswith("."):
        raise ZooError(
            f"Invalid model name {name!r}: use 1-80 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', no '..')."
        )
    return name


def save_model(
    model,
    spec,
    info: dict[str, Any],
    *,
    name: str,
    zoo: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` (weights), `spec` and `info` as zoo model `name`, atomically. Returns its folder."""
    from zoo.card import model_card  # huggingface_hub's card classes: only when saving

    root = ensure_zoo(zoo)
    target = check_free(root, name, overwrite=overwrite)
    info = {
        **info,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "created": info.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with staging_folder(root, name) as staging:
        write_model_files(staging, model, spec, info, card=model_card(name, spec, info))
        _before_publish_hook(staging)
        publish(staging, target, overwrite=overwrite)
    return target


def write_model_files(folder: Path, model, spec, info: dict[str, Any], *, card: str) -> None:
    """config.json, model.safetensors, transfer.json, README.md into `folder`, each flushed to disk."""
    import safetensors.torch

    state = {key: tensor.detach().contiguous().cpu() for key, tensor in model.state_dict().items()}
    safetensors.torch.save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    write_text(folder / "config.json", json.dumps(model_config(model, spec), indent=2))
    write_text(folder / "transfer.json", json.dumps(info, indent=2, default=json_default))
    write_text(folder / "README.md", card)
    fsync(folder / "model.safetensors")
    fsync(folder)


def model_config(model, spec) -> dict[str, Any]:
    """timm's own config.json for image-only models (so `timm.create_model("local-dir:...")` works)."""
    if spec.text is None and spec.cut_stage is None:
        from timm.models._hub import save_config_for_hf

        with tempfile.TemporaryDirectory() as tmp:
            save_config_for_hf(model, f"{tmp}/config.json", model_config={"label_names": list(spec.label_names)},
                               data_config=spec.data_config())
            return json.loads(Path(f"{tmp}/config.json").read_text())
    # truncated or multimodal: not a stock timm model; the spec in transfer.json rebuilds it
    return {
        "architecture": spec.architecture,
        "num_classes": spec.num_classes,
        "label_names": list(spec.label_names),
        "pretrained_cfg": {**spec.data_config(), "num_classes": spec.num_classes},
        "transfer_zoo": {"cut_stage": spec.cut_stage, "text": spec.text,
                         "note": "rebuild with zoo.predict / zoo.catalog.load_model; plain timm cannot"},
    }


def ensure_zoo(zoo: str | Path | None) -> Path:
    """The zoo folder, created if needed."""
    root = zoo_dir(zoo)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ZooError(f"Cannot create the zoo folder {root}: {error.strerror}") from None
    return root


def check_free(root: Path, name: str, *, overwrite: bool) -> Path:
    """The folder for a new model `name`, or `ZooError` when the name is taken (and may not be replaced)."""
    validate_name(name)
    target = root / name
    if name in BUNDLED and not target.is_dir():  # the built-in entries' names stay reserved
        raise ZooError(f"'{name}' is the name of a built-in model; choose another name.")
    if target.exists() and not (overwrite and target.is_dir()):
        raise ZooError(f"A model named '{name}' already exists in {root}; choose another name or overwrite it.")
    return target


def read_folder(path: Path) -> ZooEntry:
    """The model in folder `path` as an entry, flagged `damaged` (with the reason) when unusable."""
    entry = ZooEntry(name=path.name, path=path)
    missing = [file for file in REQUIRED_FILES if not (path / file).is_file()]
    if missing:
        entry.damaged = f"missing {', '.join(missing)}"
        return entry
    try:
        info = json.loads((path / "transfer.json").read_text(encoding="utf-8"))
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        entry.damaged = f"unreadable JSON ({error})"
        return entry
    problem = info_problem(info)
    if problem:
        entry.damaged = problem
        return entry
    try:
        safetensors_header(path / "model.safetensors")
    except (OSError, ValueError) as error:
        entry.damaged = f"model.safetensors is damaged: {error}"
        return entry
    entry.info = info
    try:
        entry.spec  # validates the spec's fields
    except ZooError as error:
        entry.damaged = str(error)
        entry.info = {}
    return entry


def info_problem(info: Any) -> str | None:
    """Why a transfer.json cannot be read by this version, or None."""
    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict):
        return "transfer.json has no model spec"
    version = info.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        return (f"transfer.json format_version {version!r} is not one this version reads (1-{FORMAT_VERSION}); "
                "update Transfer Zoo")
    return None


def read_json(path: Path, source: str) -> dict[str, Any]:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ZooError(f"{source}: {path.name} is implausibly large")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ZooError(f"{source}: {path.name} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ZooError(f"{source}: {path.name} is not a JSON object")
    return value


def rewrite_card(folder: Path) -> None:
    """The card names its model: write it again after a rename (atomically; best effort)."""
    from zoo.card import (
        model_card,  # huggingface_hub's card classes: only when writing one
    )

    entry = read_folder(folder)
    if entry.damaged:
        return
    partial = folder / f".README.md.{uuid.uuid4().hex[:8]}"
    try:
        write_text(partial, model_card(entry.name, entry.spec, entry.info))
        os.replace(partial, folder / "README.md")
    except OSError:
        partial.unlink(missing_ok=True)


def _before_publish_hook(staging: Path) -> None:
    """Test-only: with ZOO_TEST_PAUSE_BEFORE_PUBLISH=<file>, write <file> and wait until the test
    deletes it (or ZOO_TEST_PAUSE_SECONDS pass), so a test can kill the process, or release several,
    while each is provably inside a save (files written, not yet renamed)."""
    marker = os.environ.get("ZOO_TEST_PAUSE_BEFORE_PUBLISH")
    if not marker:
        return
    Path(marker).write_text(str(staging))
    deadline = time.monotonic() + float(os.environ.get("ZOO_TEST_PAUSE_SECONDS", "30"))
    while Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
