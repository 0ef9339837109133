"""Safe reading of what a user uploads: a folder or a zip, within limits, never extracted.

Zips are read in place, member by member, and never extracted, so nothing an archive names can be
written anywhere: absolute paths, '..' and symbolic links refuse the whole zip. The bytes actually
read are counted against the limits (a zip can lie about its sizes), and a member that expands
suspiciously (a zip bomb) is refused. A folder is walked without following links. Junk
(`__MACOSX/`, dotfiles, `Thumbs.db`) is ignored silently; other files that are not images are
reported by name with the reason. `transfer.data` turns the listing into a dataset.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from transfer import DataError
from zoo.images import DEFAULT_MAX_PIXELS, is_image_name

JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini", "__pycache__"}
METADATA_NAMES = {"metadata.jsonl", "metadata.csv"}  # captions (image+text data), read by transfer.captions
RATIO_CHECK_BYTES = 8 << 20  # only members larger than this are judged by their compression ratio


@dataclass(frozen=True)
class Limits:
    """What an upload may contain. Enforced on bytes actually read, not on what a zip declares."""

    max_files: int = int(os.environ.get("TRANSFER_MAX_FILES", 20_000))
    max_total_bytes: int = int(os.environ.get("TRANSFER_MAX_TOTAL_BYTES", 2 << 30))
    max_file_bytes: int = int(os.environ.get("TRANSFER_MAX_FILE_BYTES", 50 << 20))
    max_compression_ratio: float = float(os.environ.get("TRANSFER_MAX_COMPRESSION_RATIO", 200))
    max_pixels: int = DEFAULT_MAX_PIXELS


class UnreadableEntry(Exception):
    """A zip entry that cannot be decompressed (damaged, encrypted, unsupported method)."""


ZIP_ENTRY_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)


def zip_entry_problem(error: Exception) -> str:
    text = str(error)
    if "encrypted" in text or "password" in text:
        return "encrypted zip entry; zip the images without a password"
    if isinstance(error, NotImplementedError):
        return f"zip compression method not supported ({text}); use plain zip (deflate)"
    return f"damaged zip entry ({text or type(error).__name__})"


class ReadBudget:
    """Reads files and zip members for one dataset, counting every byte against `Limits`."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.total = 0

    def read_member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
        cap = self.limits.max_file_bytes
        try:
            with archive.open(info) as handle:
                content = handle.read(cap + 1)
        except ZIP_ENTRY_ERRORS as error:
            raise UnreadableEntry(zip_entry_problem(error)) from None
        if len(content) > cap:
            raise DataError(f"{name} is larger than {size_text(cap)} uncompressed; remove or shrink it")
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
            raise DataError(f"{name} is larger than {size_text(cap)}; remove or shrink it")
        return self._count(content, name)

    def _count(self, content: bytes, name: str) -> bytes:
        self.total += len(content)
        if self.total > self.limits.max_total_bytes:
            raise DataError(f"the data is larger than {size_text(self.limits.max_total_bytes)} in all "
                            f"(reached at {name}); use fewer or smaller images")
        return content


def list_folder(root: Path, limits: Limits) -> tuple[list[str], list[str], list[str]]:
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


def list_zip(source: Path, limits: Limits) -> tuple[list[str], list[str], list[str]]:
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


def junk_or_reason(path: str) -> str | None:
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


def size_text(count: int) -> str:
    """A byte count as a person reads it (KB or MB)."""
    return f"{count / (1 << 20):.0f} MB" if count >= 1 << 20 else f"{count / 1024:.1f} KB"


def header_problems(source: Path, paths: list[str], max_pixels: int) -> Iterator[str | None]:
    """For each image (a path inside the folder or zip `source`): why it cannot be used, or None.

    Reads only the header (no pixel decoding): non-images, decompression bombs, images over
    `max_pixels` and damaged zip members are caught here."""
    def check(handle) -> str | None:
        try:
            with Image.open(handle) as image:
                width, height = image.size
        except Image.DecompressionBombError:
            return "declares an enormous number of pixels (decompression bomb?)"
        except (zipfile.BadZipFile, zlib.error) as error:
            return zip_entry_problem(error)
        except Exception as error:  # Pillow raises many types for garbage input
            return "not an image Pillow can read" if "cannot identify" in str(error) else f"unreadable ({error})"
        if width * height > max_pixels:
            return f"{width}x{height} pixels is over the limit of {max_pixels:,}"
        return None

    if source.is_file():
        with zipfile.ZipFile(source) as archive:
            for path in paths:
                try:
                    with archive.open(path) as handle:
                        problem = check(handle)
                except ZIP_ENTRY_ERRORS as error:
                    problem = zip_entry_problem(error)
                yield problem
    else:
        for path in paths:
            with open(source / path, "rb") as handle:
                yield check(handle)
