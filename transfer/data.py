"""Image folders and zips in, a validated dataset out.

Layouts (a zip may wrap either in one top folder):

    root/CLASS/*.jpg                          split here: stratified, fixed seed
    root/train/CLASS/*.jpg, root/val/CLASS/*  the user's own split (`valid`, `validation` also work)
    root/test/CLASS/*                          optional, held out: the reported metrics come from it

Zips are read in place, member by member, and never extracted, so nothing an archive names can be
written anywhere; the bytes actually read are counted against the limits (a zip can lie about its
sizes). Junk (`__MACOSX/`, dotfiles, `Thumbs.db`) is ignored silently; other files that are not
usable images are skipped and reported by name with the reason. Scanning reads only image headers;
the pixels are decoded once, by the fit (`decode_images`), which reports any file that fails then.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from transfer import DataError
from zoo.images import DEFAULT_MAX_PIXELS, ImageError, is_image_name, open_image

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini", "__pycache__"}
METADATA_NAMES = {"metadata.jsonl", "metadata.csv"}  # captions (image+text data)


@dataclass(frozen=True)
class Limits:
    """What an upload may contain. Enforced on bytes actually read, not on what a zip declares."""

    max_files: int = int(os.environ.get("TRANSFER_MAX_FILES", 20_000))
    max_total_bytes: int = int(os.environ.get("TRANSFER_MAX_TOTAL_BYTES", 2 << 30))
    max_file_bytes: int = int(os.environ.get("TRANSFER_MAX_FILE_BYTES", 50 << 20))
    max_compression_ratio: float = float(os.environ.get("TRANSFER_MAX_COMPRESSION_RATIO", 200))
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Sample:
    relpath: str  # path inside the dataset, as shown to the user, e.g. "train/cat/01.jpg"
    label: int  # index into Dataset.classes
    text: str | None = None  # the sentence beside the image (image+text data)


@dataclass
class Dataset:
    source: Path  # the folder or zip the user gave
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    warnings: list[str] = field(default_factory=list)
    split_from: str = "stratified"  # "folders" when the data had its own train/val folders
    prefix: str = ""  # the wrapping folder inside a zip/folder, if any ("" for none)
    limits: Limits = field(default_factory=Limits)
    text_report: dict = field(default_factory=dict)  # image+text data: what matched, what did not

    @property
    def has_text(self) -> bool:
        return any(sample.text for split in self.splits().values() for sample in split)

    @property
    def name(self) -> str:
        stem = self.source.stem if self.source.suffix.lower() == ".zip" else self.source.name
        return PurePosixPath(self.prefix).name or stem or "dataset"

    @property
    def is_zip(self) -> bool:
        return self.source.is_file()

    def splits(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def class_counts(self) -> dict[str, dict[str, int]]:
        """{class: {"train": n, "val": n, "test": n}}, only the splits that exist."""
        counts: dict[str, dict[str, int]] = {label: {} for label in self.classes}
        for split, samples in self.splits().items():
            if not samples:
                continue
            tally = Counter(sample.label for sample in samples)
            for index, label in enumerate(self.classes):
                counts[label][split] = tally.get(index, 0)
        return counts

    def class_weights(self) -> list[float]:
        """Inverse-frequency weights over the training split, mean 1: imbalanced classes count equally."""
        tally = Counter(sample.label for sample in self.train)
        total, k = len(self.train), len(self.classes)
        return [total / (k * tally[i]) if tally[i] else 0.0 for i in range(k)]

    def read_file(self, relpath: str) -> bytes:
        """One file of the dataset (path relative to the zip/folder root), within the limits."""
        budget = _ReadBudget(self.limits)
        if self.is_zip:
            with zipfile.ZipFile(self.source) as archive:
                return budget.read_member(archive, archive.getinfo(relpath), relpath)
        return budget.read_file(self.source / relpath, relpath)

    def read_bytes(self, samples: Sequence[Sample]) -> Iterator[tuple[Sample, bytes | UnreadableEntry]]:
        """Each sample's file content, with the upload limits enforced on what is actually read.

        A damaged zip entry comes back as an `UnreadableEntry` (the sample is skipped, with the
        reason); a limit that is exceeded raises `DataError` (the whole upload is refused)."""
        budget = _ReadBudget(self.limits)
        if self.is_zip:
            with zipfile.ZipFile(self.source) as archive:
                for sample in samples:
                    info = archive.getinfo(self.prefix + sample.relpath)
                    try:
                        yield sample, budget.read_member(archive, info, sample.relpath)
                    except UnreadableEntry as problem:
                        yield sample, problem
        else:
            for sample in samples:
                yield sample, budget.read_file(self.source / self.prefix / sample.relpath, sample.relpath)

    def summary(self) -> dict:
        """Plain data for the CLI's `--json`, the app's summary and the model card."""
        return {
            "name": self.name,
            "source": str(self.source),
            "classes": self.classes,
            "class_counts": self.class_counts(),
            "num_train": len(self.train),
            "num_val": len(self.val),
            "num_test": len(self.test),
            "split_from": self.split_from,
            "skipped": [{"file": file, "reason": reason} for file, reason in self.skipped],
            "warnings": self.warnings,
            "has_text": self.has_text,
            "text_report": self.text_report,
        }


def load_dataset(
    source: str | Path,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    limits: Limits | None = None,
) -> Dataset:
    """Scan a folder or zip of class folders into a `Dataset`, or raise `DataError` saying what to fix."""
    source = Path(source).expanduser()
    limits = limits or Limits()
    if not source.exists():
        raise DataError(f"{source} does not exist: give a folder of class folders or a .zip of one")
    if source.is_file() and not zipfile.is_zipfile(source):
        raise DataError(f"{source.name} is not a folder or a zip file")
    listing, folders, links = _list_zip(source, limits) if source.is_file() else _list_folder(source, limits)
    files, skipped = [], [(link, "symbolic link, not followed") for link in links]
    metadata = [path for path in listing if PurePosixPath(path).name in METADATA_NAMES
                and not any(part.startswith(".") or part in JUNK_NAMES for part in PurePosixPath(path).parts)]
    for path in listing:
        reason = _junk_or_reason(path)
        if reason == "junk":
            continue
        if reason:
            skipped.append((path, reason))
        else:
            files.append(path)
    prefix = _wrapping_prefix(files)
    files = [path[len(prefix):] for path in files]
    skipped = [(path[len(prefix):] if path.startswith(prefix) else path, why) for path, why in skipped]
    folders = [path[len(prefix):] for path in folders if path.startswith(prefix) and len(path) > len(prefix)]
    dataset = _assign(source, files, skipped, folders, prefix, val_fraction, seed, limits)
    _check_headers(dataset)
    _validate(dataset)
    if metadata:
        _attach_texts(dataset, metadata)
    return dataset


def decode_images(
    dataset: Dataset,
    samples: Sequence[Sample],
    *,
    shorter_side: int,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[Image.Image | None], list[str], list[str | None]]:
    """Decode each sample once, resized so its shorter side is `shorter_side`.

    Returns three lists aligned with `samples`: the images (None where decoding failed), the
    content hashes (sha1 of the file bytes), and the error reasons (None where it worked).
    Decoding runs on a small thread pool (Pillow releases the GIL), one bounded window at a time.
    """
    from transfer import Cancelled

    def decode(item: tuple[Sample, bytes | UnreadableEntry]) -> tuple[Image.Image | None, str, str | None]:
        sample, content = item
        if isinstance(content, UnreadableEntry):
            return None, f"unreadable:{sample.relpath}", str(content)
        digest = hashlib.sha1(content).hexdigest()
        try:
            image = open_image(content, shorter_side=shorter_side, max_pixels=dataset.limits.max_pixels,
                               name=sample.relpath)
            return image, digest, None
        except ImageError as error:
            return None, digest, str(error).removeprefix(f"{sample.relpath}: ")

    images: list[Image.Image | None] = []
    hashes: list[str] = []
    errors: list[str | None] = []
    workers = max(1, min(4, os.cpu_count() or 1))
    window: list[tuple[Sample, bytes]] = []
    with ThreadPoolExecutor(workers) as pool:

        def flush() -> None:  # at most one window of file contents in memory
            for image, digest, error in pool.map(decode, window):
                images.append(image)
                hashes.append(digest)
                errors.append(error)
            window.clear()
            if on_progress:
                on_progress(len(images), len(samples))
            if should_stop and should_stop():
                raise Cancelled("stopped while reading images")

        for item in dataset.read_bytes(samples):
            window.append(item)
            if len(window) == 8 * workers:
                flush()
        flush()
    return images, hashes, errors


def content_hashes(dataset: Dataset, samples: Sequence[Sample]) -> list[str]:
    """sha1 of each sample's file bytes (what feature caches are keyed by), without decoding."""
    return [f"unreadable:{sample.relpath}" if isinstance(content, UnreadableEntry) else hashlib.sha1(content).hexdigest()
            for sample, content in dataset.read_bytes(samples)]


def drop_failed(dataset: Dataset, errors: dict[str, str]) -> None:
    """Report and remove the samples named in `errors` ({relpath: reason}); re-validate the dataset."""
    if not errors:
        return
    for relpath, reason in errors.items():
        if (relpath, reason) not in dataset.skipped:
            dataset.skipped.append((relpath, reason))
    dataset.train = [s for s in dataset.train if s.relpath not in errors]
    dataset.val = [s for s in dataset.val if s.relpath not in errors]
    dataset.test = [s for s in dataset.test if s.relpath not in errors]
    _validate(dataset)


# --- captions (the Hugging Face imagefolder convention) --------------------------------------------


def _attach_texts(dataset: Dataset, metadata_files: list[str]) -> None:
    """Give samples the `text` of metadata.jsonl/.csv rows (`file_name`, `text`), and report mismatches.

    A metadata file describes the files under its own folder; `file_name` is relative to it (so
    `train/metadata.jsonl` names `cat/1.jpg`, and a top-level one names `train/cat/1.jpg`).
    """
    texts: dict[str, str] = {}
    missing_files, bad_rows = [], []
    samples = {s.relpath for split in dataset.splits().values() for s in split}
    skipped = {file for file, _ in dataset.skipped}
    for meta_path in metadata_files:
        folder = PurePosixPath(meta_path).parent
        try:
            rows = _metadata_rows(dataset.read_file(meta_path).decode("utf-8-sig"), meta_path)
        except (UnicodeDecodeError, DataError) as error:
            dataset.warnings.append(f"{meta_path}: ignored ({error})")
            continue
        for number, row in rows:
            name, text = row.get("file_name"), row.get("text")
            if not isinstance(name, str) or not name.strip():
                bad_rows.append(f"{meta_path} row {number}: no file_name")
                continue
            full = _normalise(str(folder / name.strip()) if str(folder) != "." else name.strip())
            relpath = full[len(dataset.prefix):] if full.startswith(dataset.prefix) else full
            if relpath in samples:
                if isinstance(text, str) and text.strip():
                    texts[relpath] = text.strip()
            elif relpath in skipped:
                bad_rows.append(f"{meta_path} row {number}: text for {relpath}, which is not a usable image")
            else:
                missing_files.append(relpath)
    without_text = sorted(relpath for relpath in samples if relpath not in texts)

    def attach(split: list[Sample]) -> list[Sample]:
        return [Sample(s.relpath, s.label, texts.get(s.relpath)) for s in split]

    dataset.train, dataset.val, dataset.test = attach(dataset.train), attach(dataset.val), attach(dataset.test)
    dataset.text_report = {
        "images_with_text": len(samples) - len(without_text),
        "images_without_text": without_text[:50],
        "num_images_without_text": len(without_text),
        "rows_naming_missing_files": missing_files[:50],
        "num_rows_naming_missing_files": len(missing_files),
        "texts_without_image": bad_rows[:50],
    }
    if texts and without_text:
        dataset.warnings.append(f"{len(without_text)} image(s) have no text (e.g. {without_text[0]}); "
                                "the model learns to answer from the image alone for them")
    if missing_files:
        dataset.warnings.append(f"{len(missing_files)} metadata row(s) name files that do not exist "
                                f"(e.g. {missing_files[0]})")
    if bad_rows:
        dataset.warnings.append(f"{len(bad_rows)} metadata row(s) unusable (e.g. {bad_rows[0]})")


def _metadata_rows(content: str, name: str) -> list[tuple[int, dict]]:
    import csv
    import json

    if name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(content))
        if not reader.fieldnames or "file_name" not in reader.fieldnames:
            raise DataError("a metadata.csv needs a header row with 'file_name' and 'text' columns")
        return [(number, row) for number, row in enumerate(reader, start=2)]
    rows = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise DataError(f"line {number} is not JSON") from None
        rows.append((number, row if isinstance(row, dict) else {}))
    return rows


def _normalise(path: str) -> str:
    parts: list[str] = []
    for part in PurePosixPath(path.replace("\\", "/")).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", "/"):
            parts.append(part)
    return "/".join(parts)


# --- scanning ----------------------------------------------------------------------------------------


RATIO_CHECK_BYTES = 8 << 20


def _size(count: int) -> str:
    return f"{count / (1 << 20):.0f} MB" if count >= 1 << 20 else f"{count / 1024:.1f} KB"


class UnreadableEntry(Exception):
    """A zip entry that cannot be decompressed (damaged, encrypted, unsupported method)."""


ZIP_ENTRY_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)


def _zip_entry_problem(error: Exception) -> str:
    text = str(error)
    if "encrypted" in text or "password" in text:
        return "encrypted zip entry; zip the images without a password"
    if isinstance(error, NotImplementedError):
        return f"zip compression method not supported ({text}); use plain zip (deflate)"
    return f"damaged zip entry ({text or type(error).__name__})"


class _ReadBudget:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.total = 0

    def read_member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
        cap = self.limits.max_file_bytes
        try:
            with archive.open(info) as handle:
                content = handle.read(cap + 1)
        except ZIP_ENTRY_ERRORS as error:
            raise UnreadableEntry(_zip_entry_problem(error)) from None
        if len(content) > cap:
            raise DataError(f"{name} is larger than {_size(cap)} uncompressed; remove or shrink it")
        # a huge expansion is the mark of a zip bomb; small flat images (a white BMP) may legitimately
        # compress very well, so the ratio only counts for entries over a few megabytes
        if len(content) > RATIO_CHECK_BYTES and len(content) / max(info.compress_size, 1) > self.limits.max_compression_ratio:
            raise DataError(f"{name} expands {len(content) // max(info.compress_size, 1)}x when "
                            "unpacked: the zip looks like a zip bomb and was refused")
        return self._count(content, name)

    def read_file(self, path: Path, name: str) -> bytes:
        cap = self.limits.max_file_bytes
        with open(path, "rb") as handle:
            content = handle.read(cap + 1)
        if len(content) > cap:
            raise DataError(f"{name} is larger than {_size(cap)}; remove or shrink it")
        return self._count(content, name)

    def _count(self, content: bytes, name: str) -> bytes:
        self.total += len(content)
        if self.total > self.limits.max_total_bytes:
            raise DataError(f"the data is larger than {_size(self.limits.max_total_bytes)} in all "
                            f"(reached at {name}); use fewer or smaller images")
        return content


def _list_folder(root: Path, limits: Limits) -> tuple[list[str], list[str], list[str]]:
    """(files, folders, symbolic links) under `root`, as relative POSIX paths."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    paths, folders, symlinks = [], [], []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked folders
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in JUNK_NAMES]
        folders += [(Path(dirpath) / d).relative_to(root).as_posix() for d in dirnames]
        for filename in filenames:
            full = Path(dirpath) / filename
            relative = full.relative_to(root).as_posix()
            if full.is_symlink():  # a link may point anywhere on the machine: never read through one
                symlinks.append(relative)
                continue
            paths.append(relative)
            if len(paths) > limits.max_files:
                raise DataError(f"{root.name} holds more than {limits.max_files} files; use fewer images")
    return sorted(paths), sorted(folders), sorted(symlinks)


def _list_zip(source: Path, limits: Limits) -> tuple[list[str], list[str], list[str]]:
    """(files, folders) in the zip; refuses absolute paths, '..' and symbolic links."""
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{source.name} is not a readable zip file ({error})") from None
    if len(infos) > limits.max_files:
        raise DataError(f"{source.name} holds {len(infos)} entries, over the limit of {limits.max_files}")
    paths, folders = [], []
    for info in infos:
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
            raise DataError(f"{source.name} contains an unsafe path '{name}' (absolute or with '..'); refused")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise DataError(f"{source.name} contains a symbolic link '{name}'; refused")
        if info.is_dir():
            folders.append(name.rstrip("/"))
        else:
            paths.append(name)
    return sorted(paths), sorted(folders), []  # a symbolic link in a zip refuses the whole zip


def _junk_or_reason(path: str) -> str | None:
    """'junk' for files to ignore silently, a reason for files to report, None for images."""
    parts = PurePosixPath(path).parts
    if any(part.startswith(".") or part in JUNK_NAMES for part in parts):
        return "junk"
    if parts[-1] in METADATA_NAMES:
        return "junk"  # captions: read by the image+text loader, not an image
    if not is_image_name(parts[-1]):
        suffix = PurePosixPath(path).suffix or "no extension"
        return f"not an image ({suffix})"
    return None


def _wrapping_prefix(files: list[str]) -> str:
    """The folders that wrap the whole dataset ("photos/" in photos/cat/1.jpg), to strip."""
    prefix = ""
    while files:
        parts = [PurePosixPath(path[len(prefix):]).parts for path in files]
        first = {p[0] for p in parts}
        if len(first) != 1 or any(len(p) < 3 for p in parts):
            break
        (top,) = first
        if top.lower() in SPLIT_NAMES:
            break
        prefix += top + "/"
    return prefix


def _assign(source, files, skipped, folders, prefix, val_fraction, seed, limits) -> Dataset:
    """Give each file a split and a class, from the folders, or by a stratified split.

    Class names come from the training folders, including folders whose files were all skipped or
    that are empty, so that such a class is reported rather than silently dropped."""
    tops = {PurePosixPath(path).parts[0].lower() for path in files if len(PurePosixPath(path).parts) >= 3}
    by_split: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    warnings: list[str] = []
    use_folders = "train" in {SPLIT_NAMES.get(top) for top in tops}
    for path in files:
        parts = PurePosixPath(path).parts
        if use_folders:
            split = SPLIT_NAMES.get(parts[0].lower())
            if split is None or len(parts) < 3:
                skipped.append((path, "not inside train/, val/ or test/ and a class folder"))
                continue
            by_split[split].append((path, parts[1]))
        else:
            if len(parts) < 2:
                skipped.append((path, "not inside a class folder"))
                continue
            by_split["train"].append((path, parts[0]))
    class_folders = set()
    for path in [*folders, *(file for file, _ in skipped)]:
        parts = PurePosixPath(path).parts
        if use_folders and len(parts) >= 2 and SPLIT_NAMES.get(parts[0].lower()) == "train":
            class_folders.add(parts[1])
        elif not use_folders and (len(parts) >= 2 or path in folders) and not SPLIT_NAMES.get(parts[0].lower()):
            class_folders.add(parts[0])
    classes = sorted({label for _, label in by_split["train"]} | class_folders)
    index = {label: i for i, label in enumerate(classes)}
    for split in ("val", "test"):
        unknown = sorted({label for _, label in by_split[split] if label not in index})
        if unknown:
            warnings.append(f"{split}/ has classes that train/ lacks, ignored: {', '.join(unknown)}")
            by_split[split] = [(p, label) for p, label in by_split[split] if label in index]

    def samples(pairs):
        return [Sample(relpath=path, label=index[label]) for path, label in pairs]

    train, val, test = samples(by_split["train"]), samples(by_split["val"]), samples(by_split["test"])
    split_from = "folders"
    if not val:
        train, val = stratified_split(train, val_fraction, seed)
        split_from = "stratified"
    return Dataset(source=source, classes=classes, train=train, val=val, test=test, skipped=skipped,
                   warnings=warnings, split_from=split_from, prefix=prefix, limits=limits)


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Per class, a fixed-seed shuffle; round(n * val_fraction) (at least 1 when n >= 2) go to val."""
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted({sample.label for sample in samples}):
        members = sorted((s for s in samples if s.label == label), key=lambda s: s.relpath)
        rng.shuffle(members)
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction))) if len(members) >= 2 else 0
        val += members[:n_val]
        train += members[n_val:]
    return train, val


def _check_headers(dataset: Dataset) -> None:
    """Open each image's header (no pixel decoding): drops non-images, bombs and unreadable files."""
    kept: dict[str, list[Sample]] = {}
    limit = dataset.limits.max_pixels
    for split, samples in dataset.splits().items():
        kept[split] = []
        for sample, reason in zip(samples, _header_problems(dataset, samples, limit)):
            if reason:
                dataset.skipped.append((sample.relpath, reason))
            else:
                kept[split].append(sample)
    dataset.train, dataset.val, dataset.test = kept["train"], kept["val"], kept["test"]


def _header_problems(dataset: Dataset, samples: list[Sample], max_pixels: int) -> Iterator[str | None]:
    def check(handle) -> str | None:
        try:
            with Image.open(handle) as image:
                width, height = image.size
        except Image.DecompressionBombError:
            return "declares an enormous number of pixels (decompression bomb?)"
        except (zipfile.BadZipFile, zlib.error) as error:
            return _zip_entry_problem(error)
        except Exception as error:  # Pillow raises many types for garbage input
            return "not an image Pillow can read" if "cannot identify" in str(error) else f"unreadable ({error})"
        if width * height > max_pixels:
            return f"{width}x{height} pixels is over the limit of {max_pixels:,}"
        return None

    if dataset.is_zip:
        with zipfile.ZipFile(dataset.source) as archive:
            for sample in samples:
                try:
                    with archive.open(dataset.prefix + sample.relpath) as handle:
                        problem = check(handle)
                except ZIP_ENTRY_ERRORS as error:
                    problem = _zip_entry_problem(error)
                yield problem
    else:
        for sample in samples:
            with open(dataset.source / dataset.prefix / sample.relpath, "rb") as handle:
                yield check(handle)


def _validate(dataset: Dataset) -> None:
    """At least two classes, each with an image to train on and one to validate on."""
    where = dataset.source.name
    if len(dataset.classes) < 2:
        found = f"only '{dataset.classes[0]}'" if dataset.classes else "none"
        hint = _skipped_hint(dataset)
        raise DataError(
            f"{where}: need at least 2 class folders with images (found {found}). "
            f"Put each class's images in its own folder: {where}/CLASS_NAME/image.jpg.{hint}"
        )
    train_counts = Counter(sample.label for sample in dataset.train)
    val_counts = Counter(sample.label for sample in dataset.val)
    for index, label in enumerate(dataset.classes):
        if train_counts[index] == 0:
            bad = [file for file, _ in dataset.skipped if f"/{label}/" in f"/{file}"]
            detail = f" ({len(bad)} file(s) skipped, e.g. {bad[0]})" if bad else ""
            raise DataError(f"{where}: class '{label}' has no usable training image{detail}; "
                            "add images or remove the folder")
        if val_counts[index] == 0:
            raise DataError(
                f"{where}: class '{label}' has no validation image"
                + (" (it needs at least 2 images)" if dataset.split_from == "stratified" else " in val/")
            )
    smallest, largest = min(train_counts.values()), max(train_counts.values())
    if largest >= 5 * smallest and not any("imbalanced" in w for w in dataset.warnings):
        rare = [dataset.classes[i] for i, n in train_counts.items() if n == smallest]
        dataset.warnings.append(
            f"classes are imbalanced ({largest} vs {smallest} training images, smallest: {', '.join(rare)}); "
            "the loss weights classes to compensate"
        )


def _skipped_hint(dataset: Dataset) -> str:
    if not dataset.skipped:
        return ""
    shown = "; ".join(f"{file}: {reason}" for file, reason in dataset.skipped[:3])
    return f" Skipped {len(dataset.skipped)} file(s): {shown}"
