"""The local zoo: one folder per model, written atomically, listed, searched, exported and imported.

    <zoo>/<name>/config.json        timm-style config (architecture, label_names, pretrained_cfg)
    <zoo>/<name>/model.safetensors  weights
    <zoo>/<name>/README.md          model card
    <zoo>/<name>/transfer.json      how it was made (format_version, spec, strategy, data, metrics...)

A save writes everything into a hidden staging folder beside the target, flushes it to disk, then
renames it into place in one step: a crash leaves either the old model or the new one, never half.
Two saves racing for one name: the first rename wins, the second finds the name taken and is
refused. Replacing (overwrite) swaps the two folders in one step (Linux `renameat2`), so a reader
sees the old model or the new one. Nothing ever edits a model's files in place except its card.

Listing never fails on a damaged folder; it reports it as damaged, with the reason (missing files,
unreadable JSON, a truncated weights file, a format this code does not know).

Import and export move one model as a zip of exactly these files (`<name>/config.json`, ...).
An import, and a pull from the Hub (`zoo.hub`), lands through the same gate: only the expected
file names, JSON and safetensors only, the weights' names and shapes checked against the spec,
then the same atomic publish as a save. The bundled ImageNet classifiers appear in every zoo as
built-in entries (`zoo.builtin_models`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zoo import ZooError, zoo_dir

FORMAT_VERSION = 1
MODEL_FILES = ("config.json", "model.safetensors", "README.md", "transfer.json")
REQUIRED_FILES = ("config.json", "model.safetensors", "transfer.json")  # a card can be written again
STAGING_PREFIX = ".staging-"
STALE_STAGING_SECONDS = 24 * 3600  # leftovers of a crashed save older than this are swept away
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
    def spec(self):
        from zoo.spec import ModelSpec

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
    from zoo.card import model_card

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
        _publish(staging, target, overwrite=overwrite)
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
    from zoo import builtin_models

    validate_name(name)
    root = zoo_dir(zoo)
    path = root / name
    if path.is_dir():
        entry = _read_folder(path)
    elif builtin_models.is_builtin(name):
        entry = builtin_models.builtin_entry(name, zoo=zoo)  # raises when hidden or not installed
    else:
        known = ", ".join(entry.name for entry in list_entries(zoo=zoo)[:10]) or "none yet"
        raise ZooError(f"No model named '{name}' in the zoo at {root} (models: {known}).")
    if entry.damaged:
        raise ZooError(f"Model '{name}' is damaged: {entry.damaged}")
    return entry


def load_model(name: str, *, zoo: str | Path | None = None):
    """(model in eval mode, entry) for zoo model `name`, rebuilt from its spec and weights."""
    entry = read_entry(name, zoo=zoo)
    if entry.builtin:
        from zoo.builtin_models import builtin_model

        return builtin_model(entry, zoo=zoo).eval(), entry
    return load_folder_model(entry.path, entry.spec, label=f"Model '{name}'").eval(), entry


def load_folder_model(folder: Path, spec, *, label: str):
    """`build_model(spec)` with the weights of `folder/model.safetensors`, loaded strictly."""
    import safetensors.torch

    from zoo.model import build_model

    model = build_model(spec)
    try:
        state = safetensors.torch.load_file(str(folder / "model.safetensors"))
        model.load_state_dict(state, strict=True)
    except Exception as error:  # SafetensorError, RuntimeError on shape mismatch, OSError
        raise ZooError(f"{label}: its weights cannot be loaded ({str(error).splitlines()[0]})") from None
    return model


def list_entries(*, zoo: str | Path | None = None, query: str | None = None) -> list[ZooEntry]:
    """Every model in the zoo (damaged ones included, flagged), newest first, built-ins last,
    filtered by `query`: every word must appear (case-insensitively) in the name, backbone,
    strategy, data set name or a class name."""
    from zoo import builtin_models

    root = zoo_dir(zoo)
    entries = []
    if root.is_dir():
        entries = [_read_folder(path) for path in sorted(root.iterdir())
                   if path.is_dir() and not path.name.startswith(".") and path.name != "cache"]
    taken = {entry.name for entry in entries}
    entries += [builtin_models.builtin_entry(name, zoo=zoo, strict=False)
                for name in builtin_models.visible_builtins(zoo=zoo) if name not in taken]
    if query:
        words = query.lower().split()
        entries = [entry for entry in entries if all(word in _search_text(entry) for word in words)]
    return sorted(entries, key=lambda entry: entry.info.get("created") or "", reverse=True)


def remove_model(name: str, *, zoo: str | Path | None = None) -> None:
    """Delete model `name`. A built-in entry is hidden instead (`zoo.builtin_models.restore_builtin`)."""
    from zoo import builtin_models

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
    from zoo import builtin_models

    validate_name(old)
    root = zoo_dir(zoo)
    target = check_free(root, new, overwrite=False)
    if not (root / old).is_dir():
        if builtin_models.is_builtin(old):
            entry = read_entry(old, zoo=zoo)
            model, _ = load_model(old, zoo=zoo)
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
    _rewrite_card(target)
    return target


def export_model(name: str, *, zoo: str | Path | None = None, output: str | Path | None = None) -> Path:
    """Write model `name` as one zip (`<name>/config.json`, ...; see `import_model`). Returns the zip.

    output: the zip's path (default `<name>.zip` in the current folder); an existing file is
    never replaced."""
    validate_name(name)
    output = Path(output).expanduser() if output else Path.cwd() / f"{name}.zip"
    if output.suffix.lower() != ".zip":
        raise ZooError(f"{output}: the export is a zip file; give a name ending in .zip")
    if output.exists():
        raise ZooError(f"{output} already exists; choose another --output or delete it first.")
    if not output.parent.is_dir():
        raise ZooError(f"{output.parent} is not a folder; create it first.")
    root = ensure_zoo(zoo)
    with staging_folder(root, f"export-{name}") as snapshot:
        snapshot_model(name, snapshot, zoo=zoo)
        partial = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with zipfile.ZipFile(partial, "w") as archive:
                for file in MODEL_FILES:
                    compression = zipfile.ZIP_STORED if file.endswith(".safetensors") else zipfile.ZIP_DEFLATED
                    archive.write(snapshot / file, f"{name}/{file}", compress_type=compression)
            _fsync(partial)
            os.link(partial, output)  # refuses (EEXIST) rather than replace a file made meanwhile
        except FileExistsError:
            raise ZooError(f"{output} already exists; choose another --output or delete it first.") from None
        except OSError as error:
            raise ZooError(f"Cannot write {output}: {error.strerror or error}") from None
        finally:
            partial.unlink(missing_ok=True)
    return output


def import_model(
    archive: str | Path,
    *,
    name: str | None = None,
    zoo: str | Path | None = None,
    overwrite: bool = False,
) -> str:
    """Add the model in zip `archive` (as `export_model` writes it) to the zoo. Returns its name.

    The zip must hold exactly config.json, model.safetensors, transfer.json and optionally
    README.md, at its top or inside one folder; anything else is refused with the reason, and
    nothing is written to the zoo unless every check passes. name: default, the zip's folder name
    (else the zip's file name)."""
    path = Path(archive).expanduser()
    if not path.is_file():
        raise ZooError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as opened:
            members, folder = _archive_members(opened, path.name)
            try:
                name = validate_name(name or folder or path.stem)
            except ZooError as error:
                raise ZooError(f"{error} Give the model another name (--name).") from None
            root = ensure_zoo(zoo)
            target = check_free(root, name, overwrite=overwrite)
            with staging_folder(root, name) as staging:
                for file, member in members.items():
                    _extract(opened, member, staging / file)
                install_folder(staging, target, overwrite=overwrite, source=path.name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise ZooError(f"{path.name}: not a readable zip file ({error})") from None
    return name


def install_folder(staging: Path, target: Path, *, overwrite: bool, source: str) -> None:
    """Check a folder of model files (import, Hub pull) and publish it as `target`, atomically.

    staging: a fresh folder inside the zoo holding the files (it is consumed). The card is
    written again when missing or when the model arrives under another name than its card's."""
    from zoo.card import card_model_name, model_card

    spec, info = check_model_folder(staging, source=source)
    card = staging / "README.md"
    if not card.is_file() or card_model_name(card.read_text(encoding="utf-8", errors="replace")) != target.name:
        _write_text(card, model_card(target.name, spec, info))
    for file in MODEL_FILES:
        _fsync(staging / file)
    _fsync(staging)
    _publish(staging, target, overwrite=overwrite)


def check_model_folder(folder: Path, *, source: str):
    """(spec, info) of a folder of model files, or `ZooError` saying what is wrong with it.

    Checks: only the expected files; transfer.json and config.json are JSON objects of a known
    format whose classes agree; model.safetensors is complete and holds exactly the tensors, with
    the shapes, that the spec's network has (read from its header; nothing is unpickled)."""
    from zoo.model import ModelSpec, build_model

    present = {item.name for item in folder.iterdir()}
    unexpected = sorted(present - set(MODEL_FILES))
    if unexpected:
        raise ZooError(f"{source}: unexpected file(s) {', '.join(unexpected)}; a model holds only "
                       f"{', '.join(MODEL_FILES)} (weights as safetensors, never pickles)")
    missing = [file for file in REQUIRED_FILES if file not in present]
    if missing:
        raise ZooError(f"{source}: missing {', '.join(missing)}; is it a Transfer Zoo model?")
    info = _read_json(folder / "transfer.json", source)
    config = _read_json(folder / "config.json", source)
    problem = _info_problem(info)
    if problem:
        raise ZooError(f"{source}: {problem}")
    spec = ModelSpec.from_dict(info["spec"])
    if list(config.get("label_names") or spec.label_names) != spec.label_names:
        raise ZooError(f"{source}: config.json and transfer.json disagree about the class names")
    try:
        tensors = safetensors_header(folder / "model.safetensors")
    except ValueError as error:
        raise ZooError(f"{source}: model.safetensors is not a complete safetensors file ({error})") from None
    expected = {key: list(value.shape) for key, value in build_model(spec).state_dict().items()}
    wrong = [key for key in expected if key in tensors and tensors[key] != expected[key]]
    extra, absent = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
    if wrong or extra or absent:
        details = [f"{len(wrong)} with the wrong shape (e.g. {wrong[0]}: {tensors[wrong[0]]}, expected "
                   f"{expected[wrong[0]]})" if wrong else "",
                   f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                   f"{len(absent)} missing (e.g. {absent[0]})" if absent else ""]
        raise ZooError(f"{source}: the weights do not fit the {spec.architecture} network its spec describes: "
                       + ", ".join(part for part in details if part))
    return spec, info


def snapshot_model(name: str, folder: Path, *, zoo: str | Path | None = None) -> ZooEntry:
    """The files of model `name`, all from one version of it, into the empty `folder`.

    Hard links where possible (no copy); a built-in entry is written out in full. A save that
    replaces the model meanwhile cannot mix old and new files: they are read through one handle
    on the model's folder."""
    from zoo.card import model_card

    entry = read_entry(name, zoo=zoo)
    if entry.builtin:
        model, _ = load_model(name, zoo=zoo)
        write_model_files(folder, model, entry.spec, entry.info, card=model_card(name, entry.spec, entry.info))
        return entry
    try:
        handle = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise ZooError(f"Model '{name}' was removed or replaced just now; try again.") from None
    try:
        for file in MODEL_FILES:
            try:
                os.link(file, folder / file, src_dir_fd=handle, follow_symlinks=False)
            except FileNotFoundError:
                if file in REQUIRED_FILES:
                    raise ZooError(f"Model '{name}' lost its {file} just now; try again.") from None
            except OSError:  # another file system, or links not allowed: copy
                with open(os.open(file, os.O_RDONLY, dir_fd=handle), "rb") as source, open(folder / file, "wb") as copy:
                    shutil.copyfileobj(source, copy, 1 << 20)
    finally:
        os.close(handle)
    if not (folder / "README.md").is_file():
        _write_text(folder / "README.md", model_card(name, entry.spec, entry.info))
    return entry


def folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def safetensors_header(path: Path) -> dict[str, list[int]]:
    """{tensor name: shape} from a safetensors file's header, after checking that the file is
    exactly as long as the header says (a truncated or padded file raises ValueError)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{size} bytes, too short for a header")
        header_size = int.from_bytes(prefix, "little")
        if header_size > min(size - 8, 100 << 20):
            raise ValueError(f"its header claims {header_size:,} bytes, the file has {size:,}")
        try:
            header = json.loads(handle.read(header_size))
        except ValueError:
            raise ValueError("its header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    tensors, end = {}, 0
    for key, value in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = value["data_offsets"]
            tensors[key] = [int(n) for n in value["shape"]]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {key!r} has no valid shape and offsets") from None
        end = max(end, int(stop))
    if 8 + header_size + end != size:
        raise ValueError(f"the file has {size:,} bytes but its header describes {8 + header_size + end:,}")
    return tensors


# --- helpers shared with zoo.hub ------------------------------------------------------------------


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
    from zoo import builtin_models

    validate_name(name)
    target = root / name
    if builtin_models.is_builtin(name) and not target.is_dir():
        raise ZooError(f"'{name}' is the name of a built-in model; choose another name.")
    if target.exists() and not (overwrite and target.is_dir()):
        raise ZooError(f"A model named '{name}' already exists in {root}; choose another name or overwrite it.")
    return target


@contextlib.contextmanager
def staging_folder(root: Path, name: str) -> Iterator[Path]:
    """A fresh hidden folder in the zoo, removed afterwards (after a publish it holds nothing, or
    the model it replaced). Sweeps away the leftovers of crashed saves first."""
    _sweep_stale_staging(root)
    folder = root / f"{STAGING_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- internals ---------------------------------------------------------------------------------------


def _sweep_stale_staging(root: Path) -> None:
    """Remove staging folders left by a crash (a live save takes seconds, not a day)."""
    cutoff = time.time() - STALE_STAGING_SECONDS
    for path in root.glob(f"{STAGING_PREFIX}*"):
        try:
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _read_folder(path: Path) -> ZooEntry:
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
    problem = _info_problem(info)
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


def _info_problem(info: Any) -> str | None:
    """Why a transfer.json cannot be read by this version, or None."""
    if not isinstance(info, dict) or not isinstance(info.get("spec"), dict):
        return "transfer.json has no model spec"
    version = info.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        return (f"transfer.json format_version {version!r} is not one this version reads (1-{FORMAT_VERSION}); "
                "update Transfer Zoo")
    return None


def _read_json(path: Path, source: str) -> dict[str, Any]:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ZooError(f"{source}: {path.name} is implausibly large")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ZooError(f"{source}: {path.name} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ZooError(f"{source}: {path.name} is not a JSON object")
    return value


def _archive_members(archive: zipfile.ZipFile, label: str) -> tuple[dict[str, zipfile.ZipInfo], str | None]:
    """{file name: member} of a model zip, and its one folder (None: files at the top).

    Refused: absolute or '..' paths, links, nested folders, names other than the model's files,
    a file twice, and sizes beyond what a model needs (zip bombs)."""
    members: dict[str, zipfile.ZipInfo] = {}
    folders = set()
    for member in archive.infolist():
        parts = member.filename.replace("\\", "/").rstrip("/").split("/")
        if member.filename.startswith(("/", "\\")) or any(part in ("", ".", "..") for part in parts) or ":" in parts[0]:
            raise ZooError(f"{label}: refused: unsafe path {member.filename!r} in the zip")
        if member.is_dir():
            continue
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise ZooError(f"{label}: refused: {member.filename} is a link")
        if len(parts) > 2 or parts[-1] not in MODEL_FILES:
            raise ZooError(f"{label}: refused: unexpected file {member.filename!r}; a model zip holds only "
                           f"{', '.join(MODEL_FILES)} (weights as safetensors, never pickles)")
        if parts[-1] in members:
            raise ZooError(f"{label}: refused: {parts[-1]} appears twice")
        limit = MAX_WEIGHTS_BYTES if parts[-1] == "model.safetensors" else MAX_JSON_BYTES
        if member.file_size > limit:
            raise ZooError(f"{label}: refused: {member.filename} would unpack to {member.file_size:,} bytes")
        folders.add(parts[0] if len(parts) == 2 else None)
        members[parts[-1]] = member
    if len(folders) > 1:
        raise ZooError(f"{label}: refused: the files are spread over several folders; zip one model folder")
    missing = [file for file in REQUIRED_FILES if file not in members]
    if missing:
        raise ZooError(f"{label}: missing {', '.join(missing)}; is it a model exported from a zoo?")
    return members, next(iter(folders), None)


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, destination: Path) -> None:
    """Unpack one member, never writing more than it declared (the CRC is checked at its end)."""
    written = 0
    with archive.open(member) as source, open(destination, "wb") as target:
        for block in iter(lambda: source.read(1 << 20), b""):
            written += len(block)
            if written > member.file_size:
                raise ZooError(f"refused: {member.filename} unpacks to more than it declares")
            target.write(block)


def _rewrite_card(folder: Path) -> None:
    """The card names its model: write it again after a rename (atomically; best effort)."""
    from zoo.card import model_card

    entry = _read_folder(folder)
    if entry.damaged:
        return
    partial = folder / f".README.md.{uuid.uuid4().hex[:8]}"
    try:
        _write_text(partial, model_card(entry.name, entry.spec, entry.info))
        os.replace(partial, folder / "README.md")
    except OSError:
        partial.unlink(missing_ok=True)


def _search_text(entry: ZooEntry) -> str:
    row = entry.summary()
    data = (entry.info.get("data") or {}).get("name") or ""
    parts = [row["name"], str(row["backbone"]), str(row["strategy"]), data, *map(str, row["classes"])]
    return " ".join(parts).lower()


def _publish(staging: Path, target: Path, *, overwrite: bool) -> None:
    """Move the finished staging folder to `target` in one atomic step."""
    if overwrite and target.exists():
        if _exchange(staging, target):
            _fsync(target.parent)
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
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
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
