"""The zoo as a user sees it: saved model folders merged with the built-in ImageNet entries.

    read_entry / list_entries      one model, or every model (newest first, built-ins last; search)
    rename_model / remove_model    a built-in is copied on rename, hidden on remove
    load_model                     a model rebuilt from its spec, with its weights, in eval mode
    resolve_weights                THE parser of backbone names, `zoo:NAME` included (the priority
                                   is written down in `zoo.weights`)

This module sits on top: `zoo.store` (one folder), `zoo.builtin_models` and `zoo.weights` never
import it, so the arrows inside the package point one way.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from zoo import ZooError, builtin_models, zoo_dir
from zoo.files import STAGING_PREFIX, file_digest
from zoo.store import (
    ZooEntry,
    check_free,
    read_folder,
    rewrite_card,
    save_model,
    validate_name,
)
from zoo.weights import Weights, bundled_weights, source_weights


def read_entry(name: str, *, zoo: str | Path | None = None) -> ZooEntry:
    """The zoo entry `name`; raises `ZooError` when it does not exist or is damaged."""
    validate_name(name)
    root = zoo_dir(zoo)
    path = root / name
    if path.is_dir():
        entry = read_folder(path)
    elif builtin_models.is_builtin(name):
        entry = builtin_models.builtin_entry(name, zoo=zoo)  # raises when hidden or not installed
    else:
        known = ", ".join(entry.name for entry in list_entries(zoo=zoo)[:10]) or "none yet"
        raise ZooError(f"No model named '{name}' in the zoo at {root} (models: {known}).")
    if entry.damaged:
        raise ZooError(f"Model '{name}' is damaged: {entry.damaged}")
    return entry


def list_entries(*, zoo: str | Path | None = None, query: str | None = None) -> list[ZooEntry]:
    """Every model in the zoo (damaged ones included, flagged), newest first, built-ins last,
    filtered by `query`: every word must appear (case-insensitively) in the name, backbone,
    strategy, data set name or a class name."""
    root = zoo_dir(zoo)
    entries = []
    if root.is_dir():
        entries = [read_folder(path) for path in sorted(root.iterdir())
                   if path.is_dir() and not path.name.startswith(".") and path.name != "cache"]
    taken = {entry.name for entry in entries}
    entries += [builtin_models.builtin_entry(name, zoo=zoo, strict=False)
                for name in builtin_models.visible_builtins(zoo=zoo) if name not in taken]
    if query:
        words = query.lower().split()
        entries = [entry for entry in entries if all(word in _search_text(entry) for word in words)]
    return sorted(entries, key=lambda entry: entry.info.get("created") or "", reverse=True)


def load_model(name: str, *, zoo: str | Path | None = None):
    """(model in eval mode, entry) for zoo model `name`, rebuilt from its spec and weights."""
    entry = read_entry(name, zoo=zoo)
    if entry.builtin:
        return builtin_models.builtin_model(entry, zoo=zoo).eval(), entry
    return load_folder_model(entry.path, entry.spec, label=f"Model '{name}'").eval(), entry


def load_folder_model(folder: Path, spec, *, label: str):
    """`build_model(spec)` with the weights of `folder/model.safetensors`, loaded strictly."""
    import safetensors.torch  # torch: only when a model is really loaded

    from zoo.model import build_model

    model = build_model(spec)
    try:
        state = safetensors.torch.load_file(str(folder / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except Exception as error:  # SafetensorError, RuntimeError on shape mismatch, OSError
        raise ZooError(f"{label}: its weights cannot be loaded ({str(error).splitlines()[0]})") from None
    return model


def remove_model(name: str, *, zoo: str | Path | None = None) -> None:
    """Delete model `name`. A built-in entry is hidden instead (`zoo.builtin_models.restore_builtin`)."""
    validate_name(name)
    path = zoo_dir(zoo) / name
    if not path.is_dir():
        if builtin_models.is_builtin(name):
            builtin_models.hide_builtin(name, zoo=zoo)
            return
        raise ZooError(f"No model named '{name}' in the zoo at {zoo_dir(zoo)}.")
    trash = path.with_name(f"{STAGING_PREFIX}deleted-{name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, trash)  # the name disappears in one step; the files go after
    except FileNotFoundError:
        raise ZooError(f"Model '{name}' was removed by someone else just now.") from None
    shutil.rmtree(trash, ignore_errors=True)


def rename_model(old: str, new: str, *, zoo: str | Path | None = None) -> Path:
    """Rename model `old` to `new` (its card follows). Renaming a built-in entry saves a copy of
    it as `new` (a real model folder: it can be pushed, exported and deleted) and hides the built-in."""
    validate_name(old)
    root = zoo_dir(zoo)
    target = check_free(root, new, overwrite=False)
    if not (root / old).is_dir():
        if builtin_models.is_builtin(old):
            model, entry = load_model(old, zoo=zoo)
            info = {key: value for key, value in entry.info.items() if key not in ("builtin", "weights_bytes")}
            info.update(copied_from=f"built-in {old}", created=None)
            path = save_model(model, entry.spec, info, name=new, zoo=zoo)
            builtin_models.hide_builtin(old, zoo=zoo)
            return path
        raise ZooError(f"No model named '{old}' in the zoo at {root}.")
    try:
        os.rename(root / old, target)
    except OSError as error:
        raise ZooError(f"Cannot rename '{old}' to '{new}': {error.strerror}") from None
    rewrite_card(target)
    return target


def resolve_weights(backbone: str, *, zoo: str | Path | None = None) -> Weights:
    """Parse a backbone name into `Weights`, or raise `ZooError` saying what can be used instead.

    "zoo:NAME" is read from this zoo (its architecture, cut and weights; a built-in's weights come
    from its package); every other spelling goes to `zoo.weights.source_weights`."""
    backbone = backbone.strip()
    if not backbone.startswith("zoo:"):
        return source_weights(backbone, zoo=zoo)
    name = backbone.removeprefix("zoo:")
    entry = read_entry(name, zoo=zoo)  # raises ZooError naming the problem
    spec = entry.spec
    if spec.text is not None:
        raise ZooError(f"zoo:{name} is an image+text model; use an image-only zoo model as a backbone.")
    if entry.builtin:  # no weights copied into the zoo: they come from the bundled package
        return bundled_weights(spec.architecture, zoo)
    model_file = entry.path / "model.safetensors"
    return Weights(
        name=backbone,
        architecture=spec.architecture,
        source="zoo",
        file=model_file,
        fingerprint=f"zoo:{name}:{file_digest(model_file)}",
        pretrained_cfg=spec.data_config(),
        cut_stage=spec.cut_stage,
        label_names=tuple(spec.label_names),
    )


# --- lineage: a model continued from another ----------------------------------------------------


def parent_of(backbone: str, *, zoo: str | Path | None = None) -> dict | None:
    """What a fit from `backbone` continues: for "zoo:NAME", that model's name, strategy, classes,
    weights fingerprint and its own lineage; for any other backbone, None."""
    if not backbone.strip().startswith("zoo:"):
        return None
    entry = read_entry(backbone.strip().removeprefix("zoo:"), zoo=zoo)
    return {"name": entry.name, "strategy": entry.info.get("strategy"), "classes": list(entry.spec.label_names),
            "fingerprint": resolve_weights(backbone, zoo=zoo).fingerprint, "builtin": entry.builtin,
            "lineage": list(entry.info.get("lineage") or []),
            "root": entry.info.get("lineage_root") or (entry.info.get("backbone") or {}).get("name")}


def lineage_info(parent: dict | None) -> dict:
    """transfer.json's "parent" and "lineage" (the names, nearest first) of a model continuing `parent`."""
    if parent is None:
        return {}
    return {"parent": {key: value for key, value in parent.items() if key not in ("lineage", "root")},
            "lineage": [parent["name"], *parent["lineage"]], "lineage_root": parent["root"]}


def lineage(name: str, *, zoo: str | Path | None = None) -> list[dict]:
    """The chain of models `name` was continued from, nearest first: name, strategy, and whether it
    is still in this zoo (the names come from each model's own record, so a removed one still shows)."""
    info = read_entry(name, zoo=zoo).info
    chain = []
    for ancestor in info.get("lineage") or []:
        try:
            entry = read_entry(ancestor, zoo=zoo)
            chain.append({"name": ancestor, "strategy": entry.info.get("strategy"), "present": True})
        except ZooError:
            chain.append({"name": ancestor, "strategy": None, "present": False})
    return chain


def _search_text(entry: ZooEntry) -> str:
    row = entry.summary()
    data = (entry.info.get("data") or {}).get("name") or ""
    parts = [row["name"], str(row["backbone"]), str(row["strategy"]), data, *map(str, row["classes"])]
    return " ".join(parts).lower()
