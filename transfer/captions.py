"""Captions: a sentence per image, from metadata.jsonl / metadata.csv (Hugging Face imagefolder style).

A metadata file describes the files under its own folder; `file_name` is relative to it (so
`train/metadata.jsonl` names `cat/1.jpg`, and a top-level one names `train/cat/1.jpg`). Rows that
name missing files, unusable rows and images without text are counted and warned about.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from transfer import DataError


@dataclass
class Captions:
    texts: dict[str, str]  # image path (relative to the dataset root) -> its sentence
    report: dict  # what matched and what did not, for the summary and transfer.json
    warnings: list[str] = field(default_factory=list)


def read_captions(metadata_files: list[str], *, read_file: Callable[[str], bytes], prefix: str,
                  images: set[str], skipped: set[str]) -> Captions:
    """The `text` of each image named by the metadata.jsonl/.csv rows (`file_name`, `text`), and what
    did not match. images: the usable images' paths; skipped: paths skipped as unusable; prefix: the
    folder wrapping the dataset, which metadata paths include and image paths do not."""
    texts: dict[str, str] = {}
    missing_files, bad_rows, warnings = [], [], []
    samples = images
    for meta_path in metadata_files:
        folder = PurePosixPath(meta_path).parent
        try:
            rows = _metadata_rows(read_file(meta_path).decode("utf-8-sig"), meta_path)
        except (UnicodeDecodeError, DataError) as error:
            warnings.append(f"{meta_path}: ignored ({error})")
            continue
        for number, row in rows:
            name, text = row.get("file_name"), row.get("text")
            if not isinstance(name, str) or not name.strip():
                bad_rows.append(f"{meta_path} row {number}: no file_name")
                continue
            full = _normalise(str(folder / name.strip()) if str(folder) != "." else name.strip())
            relpath = full[len(prefix):] if full.startswith(prefix) else full
            if relpath in samples:
                if isinstance(text, str) and text.strip():
                    texts[relpath] = text.strip()
            elif relpath in skipped:
                bad_rows.append(f"{meta_path} row {number}: text for {relpath}, which is not a usable image")
            else:
                missing_files.append(relpath)
    without_text = sorted(relpath for relpath in samples if relpath not in texts)
    report = {
        "images_with_text": len(samples) - len(without_text),
        "images_without_text": without_text[:50],
        "num_images_without_text": len(without_text),
        "rows_naming_missing_files": missing_files[:50],
        "num_rows_naming_missing_files": len(missing_files),
        "texts_without_image": bad_rows[:50],
    }
    if texts and without_text:
        warnings.append(f"{len(without_text)} image(s) have no text (e.g. {without_text[0]}); "
                                "the model learns to answer from the image alone for them")
    if missing_files:
        warnings.append(f"{len(missing_files)} metadata row(s) name files that do not exist "
                                f"(e.g. {missing_files[0]})")
    if bad_rows:
        warnings.append(f"{len(bad_rows)} metadata row(s) unusable (e.g. {bad_rows[0]})")
    return Captions(texts, report, warnings)


def _metadata_rows(content: str, name: str) -> list[tuple[int, dict]]:
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
