"""The feature cache on disk: frozen backbone features and sentence embeddings, keyed by content.

    <zoo>/cache/features/<key>.safetensors            a complete feature set (one per weights, input
                                                      settings and set of image contents)
    <zoo>/cache/features/.partial-<key>/part-NNNNN.safetensors   a pass in progress, one part per chunk
    <zoo>/cache/features/text-<key>.safetensors       sentence embeddings of one encoder

A pass writes each chunk of features as a part as soon as it is computed (each part atomically);
only when every part is there is the complete file written (atomically) and the parts removed. So a
crash or a cancel halfway leaves parts, never a file that looks complete, and the next pass over
the same images reuses the parts it finds and computes only the rest. The oldest files are evicted
past a size cap (`TRANSFER_FEATURE_CACHE_MB`), parts of abandoned passes after a day.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from zoo import zoo_dir
from zoo.files import write_bytes_atomically
from zoo.model import ModelSpec

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_CAP_BYTES = int(os.environ.get("TRANSFER_FEATURE_CACHE_MB", 2048)) << 20
STALE_PARTS_SECONDS = 24 * 3600


@dataclass
class Features:
    final: torch.Tensor  # (N, num_features): what the model's classifier sees
    stages: list[torch.Tensor]  # per backbone stage k: (N, channels_k), global-average pooled

    def select(self, rows: list[int]) -> "Features":
        index = torch.as_tensor(rows, dtype=torch.long)
        return Features(self.final[index], [stage[index] for stage in self.stages])

    @staticmethod
    def concatenate(parts: list["Features"]) -> "Features":
        stages = [torch.cat([part.stages[k] for part in parts]) for k in range(len(parts[0].stages))]
        return Features(torch.cat([part.final for part in parts]), stages)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"final": self.final.contiguous()} | {f"stage{k}": s.contiguous() for k, s in enumerate(self.stages)}

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], stage_count: int) -> "Features":
        return Features(tensors["final"], [tensors[f"stage{k}"] for k in range(stage_count)])


def cache_key(weights_fingerprint: str, spec: ModelSpec, hashes: Iterable[str]) -> str:
    """Identifies a feature set: the weights, every input setting, and the images' contents."""
    settings = {
        "version": CACHE_VERSION,
        "weights": weights_fingerprint,
        "architecture": spec.architecture,
        "data": spec.data_config(),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for content_hash in sorted(set(hashes)):
        digest.update(content_hash.encode())
    return digest.hexdigest()[:32]


def cache_dir(zoo) -> Path:
    return zoo_dir(zoo) / "cache" / "features"


def load_cached(key: str, hashes: list[str], *, zoo: str | Path | None = None) -> tuple[Features | None, dict[str, str]]:
    """(features in the order of `hashes`, {hash: reason} for images that failed to decode), or (None, {})."""
    path = cache_dir(zoo) / f"{key}.safetensors"
    if not path.is_file():
        return None, {}
    try:
        tensors, meta = _read(path)
        stored = json.loads(meta["hashes"])
        failed = json.loads(meta.get("failed", "{}"))
        row_of = {content_hash: row for row, content_hash in enumerate(stored)}
        rows = [row_of[h] for h in hashes if h not in failed]
        features = Features.from_tensors(tensors, int(meta["stages"]))
    except (OSError, KeyError, ValueError) as error:  # damaged or foreign file: recompute
        log.warning("ignoring unreadable feature cache %s (%s)", path.name, error)
        return None, {}
    os.utime(path)  # recently used: evicted last
    return features.select(rows), failed


def store_cached(key: str, hashes: list[str], features: Features, failed: dict[str, str], *, zoo=None) -> None:
    """Write a complete feature set (rows in the order of the non-failed `hashes`) atomically, remove
    its parts, then enforce the cap."""
    directory = cache_dir(zoo)
    directory.mkdir(parents=True, exist_ok=True)
    kept = [h for h in hashes if h not in failed]
    first_row: dict[str, int] = {}
    for row, content_hash in enumerate(kept):
        first_row.setdefault(content_hash, row)  # duplicate images: store once
    unique = features.select(list(first_row.values()))
    meta = {"hashes": json.dumps(list(first_row)), "failed": json.dumps(failed), "stages": str(len(unique.stages))}
    write_bytes_atomically(directory / f"{key}.safetensors", safetensors.torch.save(unique.tensors(), metadata=meta))
    shutil.rmtree(_parts_dir(key, zoo), ignore_errors=True)
    _enforce_cap(directory)


# --- parts of a pass in progress ----------------------------------------------------------------------


def load_part(key: str, chunk: int, hashes: list[str], *, zoo=None) -> tuple[Features, dict[str, str]] | None:
    """A chunk's features from an earlier, unfinished pass over the same images (`hashes`: the chunk's)."""
    path = _parts_dir(key, zoo) / f"part-{chunk:05d}.safetensors"
    if not path.is_file():
        return None
    try:
        tensors, meta = _read(path)
        if json.loads(meta["hashes"]) != hashes:
            return None
        return Features.from_tensors(tensors, int(meta["stages"])), json.loads(meta["failed"])
    except (OSError, KeyError, ValueError):
        return None


def store_part(key: str, chunk: int, hashes: list[str], features: Features, failed: dict[str, str], *, zoo=None) -> None:
    """One chunk's features (rows of the chunk's non-failed images), written atomically."""
    folder = _parts_dir(key, zoo)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"hashes": json.dumps(hashes), "failed": json.dumps(failed), "stages": str(len(features.stages))}
    write_bytes_atomically(folder / f"part-{chunk:05d}.safetensors",
                           safetensors.torch.save(features.tensors(), metadata=meta))


def _parts_dir(key: str, zoo) -> Path:
    return cache_dir(zoo) / f".partial-{key}"


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata() or {}


def _enforce_cap(directory: Path) -> None:
    files = sorted(directory.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for path in files:
        total += path.stat().st_size
        if total > CACHE_CAP_BYTES and path is not files[0]:
            path.unlink(missing_ok=True)
            log.info("feature cache over %d MB: evicted %s", CACHE_CAP_BYTES >> 20, path.name)
    for parts in directory.glob(".partial-*"):  # passes abandoned long ago
        if time.time() - parts.stat().st_mtime > STALE_PARTS_SECONDS:
            shutil.rmtree(parts, ignore_errors=True)


# --- sentence embeddings ----------------------------------------------------------------------------


def cached_text_inputs(encoder: str, texts: list[str | None], *, zoo: str | Path | None = None):
    """`zoo.text.TextInputs` for `texts`; frozen encoders' embeddings come from (and fill) the cache.

    The sentence encoder runs at most once per distinct text and encoder, across fits.
    """
    from zoo.text import is_frozen, prepare_texts

    if not is_frozen(encoder):
        return prepare_texts(encoder, texts)

    def embed(name: str, wanted: list[str]) -> torch.Tensor:
        hashes = [hashlib.sha1(text.encode()).hexdigest() for text in wanted]
        key = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "text_encoder": name}).encode())
        for content_hash in sorted(set(hashes)):
            key.update(content_hash.encode())
        path = cache_dir(zoo) / f"text-{key.hexdigest()[:32]}.safetensors"
        if path.is_file():
            try:
                tensors, meta = _read(path)
                row_of = {h: row for row, h in enumerate(json.loads(meta["hashes"]))}
                os.utime(path)
                return tensors["embeddings"][[row_of[h] for h in hashes]]
            except (OSError, KeyError, ValueError) as error:
                log.warning("ignoring unreadable text cache %s (%s)", path.name, error)
        from zoo.text import embed_texts

        unique = list(dict.fromkeys(zip(hashes, wanted)))
        vectors = embed_texts(name, [text for _, text in unique])
        write_bytes_atomically(path, safetensors.torch.save({"embeddings": vectors.contiguous()},
                                                            metadata={"hashes": json.dumps([h for h, _ in unique])}))
        _enforce_cap(path.parent)
        row_of = {h: row for row, (h, _) in enumerate(unique)}
        return vectors[[row_of[h] for h in hashes]]

    return prepare_texts(encoder, texts, embed=embed)
