"""Image folders and zips in, a validated dataset out.

Layouts (a zip may wrap either in one top folder):

    root/CLASS/*.jpg                          split here: stratified, fixed seed
    root/train/CLASS/*.jpg, root/val/CLASS/*  the user's own split (`valid`, `validation` also work)
    root/test/CLASS/*                          optional, held out: the reported metrics come from it

Reading the upload safely (zip checks, limits, junk) is `transfer.uploads`; captions beside the
images are `transfer.captions`. Scanning reads only image headers; the pixels are decoded by the
fit, which reports any file that fails then.
"""

from __future__ import annotations

import random
import statistics
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from transfer import DataError
from transfer.captions import read_captions
from transfer.uploads import (
    JUNK_NAMES,
    METADATA_NAMES,
    Limits,
    ReadBudget,
    UnreadableEntry,
    image_headers,
    junk_or_reason,
    list_folder,
    list_zip,
)

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


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
    median_side: int | None = None  # px: the median shorter side of the usable images (from their headers)

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

    def copy(self) -> "Dataset":
        """An independent copy: a fit may drop samples that fail to decode without touching this one."""
        return replace(self, train=list(self.train), val=list(self.val), test=list(self.test),
                       skipped=list(self.skipped), warnings=list(self.warnings), text_report=dict(self.text_report))

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

    def read_file(self, relpath: str) -> bytes:
        """One file of the dataset (path relative to the zip/folder root), within the limits."""
        budget = ReadBudget(self.limits)
        if self.is_zip:
            with zipfile.ZipFile(self.source) as archive:
                return budget.read_member(archive, archive.getinfo(relpath), relpath)
        return budget.read_file(self.source / relpath, relpath)

    def read_bytes(self, samples: Sequence[Sample]) -> Iterator[tuple[Sample, bytes | UnreadableEntry]]:
        """Each sample's file content, with the upload limits enforced on what is actually read.

        A damaged zip entry comes back as an `UnreadableEntry` (the sample is skipped, with the
        reason); a limit that is exceeded raises `DataError` (the whole upload is refused)."""
        budget = ReadBudget(self.limits)
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
            "median_side": self.median_side,
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
    listing, folders, links = list_zip(source, limits) if source.is_file() else list_folder(source, limits)
    files, skipped = [], [(link, "symbolic link, not followed") for link in links]
    metadata = [path for path in listing if PurePosixPath(path).name in METADATA_NAMES
                and not any(part.startswith(".") or part in JUNK_NAMES for part in PurePosixPath(path).parts)]
    for path in listing:
        reason = junk_or_reason(path)
        if reason == "junk":
            continue
        if reason:
            skipped.append((path, reason))
        else:
            files.append(path)
    prefix = wrapping_prefix(files)
    files = [path[len(prefix):] for path in files]
    skipped = [(path[len(prefix):] if path.startswith(prefix) else path, why) for path, why in skipped]
    folders = [path[len(prefix):] for path in folders if path.startswith(prefix) and len(path) > len(prefix)]
    dataset = _assign(source, files, skipped, folders, prefix, val_fraction, seed, limits)
    _check_headers(dataset)
    _validate(dataset)
    if metadata:
        _attach_captions(dataset, metadata)
    return dataset


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


# --- scanning ----------------------------------------------------------------------------------------


def wrapping_prefix(files: list[str]) -> str:
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
    """Open each image's header (no pixel decoding): drops non-images, bombs and unreadable files,
    and notes the images' median shorter side (what the default input size is chosen from)."""
    kept: dict[str, list[Sample]] = {}
    sides: list[int] = []
    limit = dataset.limits.max_pixels
    for split, samples in dataset.splits().items():
        kept[split] = []
        paths = [dataset.prefix + sample.relpath for sample in samples]
        for sample, (reason, size) in zip(samples, image_headers(dataset.source, paths, limit)):
            if reason:
                dataset.skipped.append((sample.relpath, reason))
            else:
                kept[split].append(sample)
                sides.append(min(size))
    dataset.train, dataset.val, dataset.test = kept["train"], kept["val"], kept["test"]
    dataset.median_side = round(statistics.median(sides)) if sides else None


def _attach_captions(dataset: Dataset, metadata: list[str]) -> None:
    """Give each sample the sentence its metadata file names (`transfer.captions`), and say what did not fit."""
    captions = read_captions(metadata, read_file=dataset.read_file, prefix=dataset.prefix,
                             images={s.relpath for split in dataset.splits().values() for s in split},
                             skipped={file for file, _ in dataset.skipped})
    for split, samples in dataset.splits().items():
        setattr(dataset, split, [replace(s, text=captions.texts.get(s.relpath)) for s in samples])
    dataset.text_report = captions.report
    dataset.warnings += captions.warnings


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
            "the fit weighs them (--balance auto: class weights)"
        )


def _skipped_hint(dataset: Dataset) -> str:
    if not dataset.skipped:
        return ""
    shown = "; ".join(f"{file}: {reason}" for file, reason in dataset.skipped[:3])
    return f" Skipped {len(dataset.skipped)} file(s): {shown}"
