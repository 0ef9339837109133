"""Writing files so that a crash never leaves half of one: the one home of the project's file helpers.

    write_text / write_bytes_atomically   a file flushed to disk (atomically: temp file + rename)
    staging_folder + publish               a folder built aside, then renamed into place in one step
    file_digest                            sha256 of a file, memoised per version (inode, size, times)
    safetensors_header                     a safetensors file's tensors, checked against its length

`zoo.store`, `zoo.archives`, `zoo.builtin_models`, the feature caches and the comparison files all
write through these. Nothing here imports the rest of the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo import ZooError

STAGING_PREFIX = ".staging-"
STALE_STAGING_SECONDS = 24 * 3600  # leftovers of a crashed save older than this are swept away


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` and flush it to disk (the caller renames it into place if needed)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_bytes_atomically(path: Path, content: bytes) -> None:
    """Replace `path` with `content` in one step: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def fsync(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_default(value: Any) -> Any:
    """`json.dumps(default=...)` for the values transfer.json holds: paths, tensors, arrays, tuples."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


# --- a new file for the user (exports) -------------------------------------------------------------


def new_file(output: str | Path | None, default: Path, suffix: str) -> Path:
    """Where an export goes: `output` (or `default`), refused unless it ends in `suffix`, does not
    exist yet and lies in an existing folder."""
    output = Path(output).expanduser() if output else default
    if output.suffix.lower() != suffix:
        raise ZooError(f"{output}: give a file name ending in {suffix}")
    if output.exists():
        raise ZooError(f"{output} already exists; choose another --output or delete it first.")
    if not output.parent.is_dir():
        raise ZooError(f"{output.parent} is not a folder; create it first.")
    return output


@contextlib.contextmanager
def written_aside(output: Path) -> Iterator[Path]:
    """A hidden file beside `output` for the block to write; when the block ends well it is flushed
    and linked to `output` (never replacing a file made meanwhile); it is removed in any case."""
    partial = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield partial
        fsync(partial)
        os.link(partial, output)  # refuses (EEXIST) rather than replace a file made meanwhile
    except FileExistsError:
        raise ZooError(f"{output} already exists; choose another --output or delete it first.") from None
    except OSError as error:
        raise ZooError(f"Cannot write {output}: {error.strerror or error}") from None
    finally:
        partial.unlink(missing_ok=True)


# --- a folder built aside, then published in one step --------------------------------------------------


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


def publish(staging: Path, target: Path, *, overwrite: bool) -> None:
    """Move the finished staging folder to `target` in one atomic step.

    Without `overwrite` the first of two racing publishes wins and the second raises `ZooError`;
    with it the two folders are swapped (Linux `renameat2`), so a reader sees old or new."""
    if overwrite and target.exists():
        if _exchange(staging, target):
            fsync(target.parent)
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
    fsync(target.parent)


def _sweep_stale_staging(root: Path) -> None:
    """Remove staging folders left by a crash (a live save takes seconds, not a day)."""
    cutoff = time.time() - STALE_STAGING_SECONDS
    for path in root.glob(f"{STAGING_PREFIX}*"):
        try:
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


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


# --- reading ---------------------------------------------------------------------------------------


def file_digest(path: str | Path) -> str:
    """sha256 of the file, computed once per version of it (inode, size and times key the memo),
    so asking again costs a `stat`."""
    stat = os.stat(path)
    version = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return _digest(str(Path(path).resolve()), version)


@functools.lru_cache(maxsize=128)
def _digest(path: str, version: tuple) -> str:  # `version` keys the memo
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
