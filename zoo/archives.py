"""Moving one model as files: a zip (export, import), or a folder to upload or one just downloaded.

    export_model(name, output=...)     <name>/config.json, model.safetensors, README.md, transfer.json
    export_onnx(name, output=...)      one .onnx file for onnxruntime, checked (zoo.onnx_export)
    import_model(zip)                  the reverse, through the same gate as a Hub pull
    snapshot_model(name, folder)       one consistent version of a model's files (push, export)
    install_folder(folder, target)     check a folder of model files and publish it atomically

The gate (`check_model_folder`): only the expected file names, JSON and safetensors only, the
weights' names and shapes checked against the spec (read from the safetensors header; nothing is
unpickled), then the same atomic publish as a save. Anything else is refused with the reason and
nothing is written to the zoo.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

from zoo import ZooError
from zoo.catalog import load_model, read_entry
from zoo.files import fsync, new_file, publish, safetensors_header, staging_folder, write_text, written_aside
from zoo.spec import ModelSpec
from zoo.store import (
    MAX_JSON_BYTES,
    MAX_WEIGHTS_BYTES,
    MODEL_FILES,
    REQUIRED_FILES,
    ZooEntry,
    check_free,
    ensure_zoo,
    info_problem,
    read_json,
    validate_name,
    write_model_files,
)


def export_onnx(name: str, **options):
    """Model `name` as a checked `.onnx` file, beside the zip export: `zoo.onnx_export.export_onnx`
    (see there for the options and what is checked)."""
    from zoo.onnx_export import export_onnx as export  # torch, onnx and onnxruntime: only when exporting

    return export(name, **options)


def export_model(name: str, *, zoo: str | Path | None = None, output: str | Path | None = None) -> Path:
    """Write model `name` as one zip (`<name>/config.json`, ...; see `import_model`). Returns the zip.

    output: the zip's path (default `<name>.zip` in the current folder); an existing file is
    never replaced."""
    validate_name(name)
    output = new_file(output, Path.cwd() / f"{name}.zip", ".zip")
    root = ensure_zoo(zoo)
    with staging_folder(root, f"export-{name}") as snapshot:
        snapshot_model(name, snapshot, zoo=zoo)
        with written_aside(output) as partial, zipfile.ZipFile(partial, "w") as archive:
            for file in MODEL_FILES:
                compression = zipfile.ZIP_STORED if file.endswith(".safetensors") else zipfile.ZIP_DEFLATED
                archive.write(snapshot / file, f"{name}/{file}", compress_type=compression)
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
    from zoo.card import card_model_name, model_card  # huggingface_hub's card classes

    spec, info = check_model_folder(staging, source=source)
    card = staging / "README.md"
    if not card.is_file() or card_model_name(card.read_text(encoding="utf-8", errors="replace")) != target.name:
        write_text(card, model_card(target.name, spec, info))
    for file in MODEL_FILES:
        fsync(staging / file)
    fsync(staging)
    publish(staging, target, overwrite=overwrite)


def check_model_folder(folder: Path, *, source: str):
    """(spec, info) of a folder of model files, or `ZooError` saying what is wrong with it.

    Checks: only the expected files; transfer.json and config.json are JSON objects of a known
    format whose classes agree; model.safetensors is complete and holds exactly the tensors, with
    the shapes, that the spec's network has (read from its header; nothing is unpickled)."""
    from zoo.model import (
        build_model,  # torch: the expected shapes come from the network itself
    )

    present = {item.name for item in folder.iterdir()}
    unexpected = sorted(present - set(MODEL_FILES))
    if unexpected:
        raise ZooError(f"{source}: unexpected file(s) {', '.join(unexpected)}; a model holds only "
                       f"{', '.join(MODEL_FILES)} (weights as safetensors, never pickles)")
    missing = [file for file in REQUIRED_FILES if file not in present]
    if missing:
        raise ZooError(f"{source}: missing {', '.join(missing)}; is it a Transfer Zoo model?")
    info = read_json(folder / "transfer.json", source)
    config = read_json(folder / "config.json", source)
    problem = info_problem(info)
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
    from zoo.card import model_card  # huggingface_hub's card classes

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
        write_text(folder / "README.md", model_card(name, entry.spec, entry.info))
    return entry


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
