"""The local zoo: one folder per model, written atomically, listed and searched.

    <zoo>/<name>/config.json        timm-style config (architecture, label_names, pretrained_cfg)
    <zoo>/<name>/model.safetensors  weights
    <zoo>/<name>/README.md          model card
    <zoo>/<name>/transfer.json      how it was made (format_version, spec, strategy, data, metrics...)

A save writes everything into a hidden staging folder beside the target, flushes it to disk, then
renames it into place in one step: a crash leaves either the old model or the new one, never half.
Two saves racing for one name: the first rename wins, the second finds the name taken and is
refused. Listing never fails on a damaged folder; it reports it as damaged, with the reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zoo import ZooError, zoo_dir

FORMAT_VERSION = 1
MODEL_FILES = ("config.json", "model.safetensors", "README.md", "transfer.json")
STAGING_PREFIX = ".staging-"
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


@dataclass
class ZooEntry:
    """One model folder as the listing sees it. `damaged` holds the reason when it cannot be used."""

    name: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)  # transfer.json
    damaged: str | None = None

    @property
    def spec(self):
        from zoo.model import ModelSpec

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
            "size_bytes": folder_size(self.path),
            "created": self.info.get("created"),
            "takes_text": spec.get("text") is not None,
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
    from zoo.card import model_card

    validate_name(name)
    root = zoo_dir(zoo)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if target.exists() and not overwrite:
        raise ZooError(f"A model named '{name}' already exists in {root}; choose another name or overwrite it.")
    info = {
        **info,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "created": info.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    staging = root / f"{STAGING_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        write_model_files(staging, model, spec, info, card=model_card(name, spec, info))
        _before_publish_hook(staging)
        _publish(staging, target, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # nothing left when the rename happened
    return target


def write_model_files(folder: Path, model, spec, info: dict[str, Any], *, card: str) -> None:
    """config.json, model.safetensors, transfer.json, README.md into `folder`, each flushed to disk."""
    import safetensors.torch

    state = {key: tensor.detach().contiguous().cpu() for key, tensor in model.state_dict().items()}
    safetensors.torch.save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _write_text(folder / "config.json", json.dumps(model_config(model, spec), indent=2))
    _write_text(folder / "transfer.json", json.dumps(info, indent=2, default=_json_default))
    _write_text(folder / "README.md", card)
    _fsync(folder / "model.safetensors")
    _fsync(folder)


def model_config(model, spec) -> dict[str, Any]:
    """timm's own config.json for image-only models (so `timm.create_model("local-dir:...")` works)."""
    import tempfile

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
                         "note": "rebuild with zoo.predict / zoo.store.load_model; plain timm cannot"},
    }


def read_entry(name: str, *, zoo: str | Path | None = None) -> ZooEntry:
    """The zoo entry `name`; raises `ZooError` when it does not exist or is damaged."""
    validate_name(name)
    path = zoo_dir(zoo) / name
    if not path.is_dir():
        known = ", ".join(entry.name for entry in list_entries(zoo=zoo)[:10]) or "none yet"
        raise ZooError(f"No model named '{name}' in the zoo at {zoo_dir(zoo)} (models: {known}).")
    entry = _read_folder(path)
    if entry.damaged:
        raise ZooError(f"Model '{name}' is damaged: {entry.damaged}")
    return entry


def load_model(name: str, *, zoo: str | Path | None = None):
    """(model in eval mode, entry) for zoo model `name`, rebuilt from its spec and weights."""
    import safetensors.torch

    from zoo.model import build_model

    entry = read_entry(name, zoo=zoo)
    model = build_model(entry.spec)
    try:
        state = safetensors.torch.load_file(str(entry.path / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except Exception as error:  # SafetensorError, RuntimeError on shape mismatch, OSError
        raise ZooError(f"Model '{name}': its weights cannot be loaded ({str(error).splitlines()[0]})") from None
    return model.eval(), entry


def list_entries(*, zoo: str | Path | None = None, query: str | None = None) -> list[ZooEntry]:
    """Every model folder in the zoo (damaged ones included, flagged), newest first, filtered by `query`.

    The query matches, case-insensitively, any word of the name, backbone, strategy or class names.
    """
    root = zoo_dir(zoo)
    if not root.is_dir():
        return []
    entries = [_read_folder(path) for path in sorted(root.iterdir())
               if path.is_dir() and not path.name.startswith(".") and path.name != "cache"]
    if query:
        words = query.lower().split()
        entries = [entry for entry in entries if all(word in _search_text(entry) for word in words)]
    return sorted(entries, key=lambda entry: entry.info.get("created") or "", reverse=True)


def remove_model(name: str, *, zoo: str | Path | None = None) -> None:
    validate_name(name)
    path = zoo_dir(zoo) / name
    if not path.is_dir():
        raise ZooError(f"No model named '{name}' in the zoo at {zoo_dir(zoo)}.")
    trash = path.with_name(f"{STAGING_PREFIX}deleted-{name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, trash)  # the name disappears in one step; the files go after
    shutil.rmtree(trash, ignore_errors=True)


def rename_model(old: str, new: str, *, zoo: str | Path | None = None) -> Path:
    validate_name(old)
    validate_name(new)
    root = zoo_dir(zoo)
    if not (root / old).is_dir():
        raise ZooError(f"No model named '{old}' in the zoo at {root}.")
    if (root / new).exists():
        raise ZooError(f"A model named '{new}' already exists; remove it first or pick another name.")
    try:
        os.rename(root / old, root / new)
    except OSError as error:
        raise ZooError(f"Cannot rename '{old}' to '{new}': {error.strerror}") from None
    return root / new


def folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


# --- internals ---------------------------------------------------------------------------------------


def _read_folder(path: Path) -> ZooEntry:
    entry = ZooEntry(name=path.name, path=path)
    missing = [file for file in ("transfer.json", "config.json", "model.safetensors") if not (path / file).is_file()]
    if missing:
        entry.damaged = f"missing {', '.join(missing)}"
        return entry
    try:
        info = json.loads((path / "transfer.json").read_text())
    except (OSError, ValueError) as error:
        entry.damaged = f"transfer.json is not valid JSON ({error})"
        return entry
    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict):
        entry.damaged = "transfer.json has no model spec"
        return entry
    version = info.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        entry.damaged = f"transfer.json format_version {version!r} is not one this version reads (1-{FORMAT_VERSION})"
        return entry
    entry.info = info
    try:
        entry.spec  # validates the spec's fields
    except ZooError as error:
        entry.damaged = str(error)
        entry.info = {}
    return entry


def _search_text(entry: ZooEntry) -> str:
    row = entry.summary()
    parts = [row["name"], str(row["backbone"]), str(row["strategy"]), *map(str, row["classes"])]
    return " ".join(parts).lower()


def _publish(staging: Path, target: Path, *, overwrite: bool) -> None:
    """Move the finished staging folder to `target` in one atomic step."""
    if overwrite and target.exists():
        if _exchange(staging, target):
            return  # staging now holds the old model and is deleted by the caller
        old = target.with_name(f"{STAGING_PREFIX}replaced-{target.name}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        try:
            os.rename(staging, target)
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(staging, target)  # fails when another save got there first
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise ZooError(f"A model named '{target.name}' was saved by someone else just now; "
                           "choose another name or overwrite it.") from None
        raise
    _fsync(target.parent)


def _exchange(first: Path, second: Path) -> bool:
    """Linux renameat2(RENAME_EXCHANGE): swap two folders atomically. False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    return result == 0


def _before_publish_hook(staging: Path) -> None:
    """Test-only: with ZOO_TEST_PAUSE_BEFORE_PUBLISH=<file>, touch <file> and sleep, so a test can
    kill the process while it is provably inside a save (files written, not yet renamed)."""
    marker = os.environ.get("ZOO_TEST_PAUSE_BEFORE_PUBLISH")
    if marker:
        Path(marker).write_text(str(staging))
        time.sleep(float(os.environ.get("ZOO_TEST_PAUSE_SECONDS", "30")))


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
