"""Cached frozen features: one forward pass of the frozen backbone, reused by every frozen fit.

One pass over the images records, per image, the pooled output of EVERY backbone stage plus the
final pre-logits features (timm's `forward_intermediates`). `feature-extractor` trains its head on
the final features, `shallow` probes each stage to choose its cut, `fine-tune` warms its head up on
them, and a repeat fit of the same data and backbone (or `compare`) skips the pass altogether.

Caches live in `<zoo>/cache/features/`, one safetensors file per (weights, input settings, set of
image contents); the oldest files are evicted past a size cap (`TRANSFER_FEATURE_CACHE_MB`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from transfer.data import Dataset, drop_failed
from transfer.loading import content_hashes, decode_images
from transfer.progress import Progress, Run
from transfer.train import eval_crops
from zoo import zoo_dir
from zoo.model import ModelSpec, fused_for_inference, normalize
from zoo.weights import Weights

log = logging.getLogger(__name__)

FEATURE_CHUNK = 256  # images decoded at a time in the streamed feature pass

CACHE_VERSION = 1
CACHE_CAP_BYTES = int(os.environ.get("TRANSFER_FEATURE_CACHE_MB", 2048)) << 20


@dataclass
class Features:
    final: torch.Tensor  # (N, num_features): what the model's classifier sees
    stages: list[torch.Tensor]  # per backbone stage k: (N, channels_k), global-average pooled

    def select(self, rows: list[int]) -> "Features":
        index = torch.as_tensor(rows, dtype=torch.long)
        return Features(self.final[index], [stage[index] for stage in self.stages])


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


def load_cached(key: str, hashes: list[str], *, zoo: str | Path | None = None) -> tuple[Features | None, dict[str, str]]:
    """(features in the order of `hashes`, {hash: reason} for images that failed to decode), or (None, {})."""
    path = _cache_dir(zoo) / f"{key}.safetensors"
    if not path.is_file():
        return None, {}
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        stored = json.loads(meta["hashes"])
        failed = json.loads(meta.get("failed", "{}"))
        row_of = {content_hash: row for row, content_hash in enumerate(stored)}
        rows = [row_of[h] for h in hashes if h not in failed]
        stage_count = int(meta["stages"])
    except (OSError, KeyError, ValueError) as error:  # damaged or foreign file: recompute
        log.warning("ignoring unreadable feature cache %s (%s)", path.name, error)
        return None, {}
    os.utime(path)  # recently used: evicted last
    features = Features(tensors["final"], [tensors[f"stage{k}"] for k in range(stage_count)]).select(rows)
    return features, failed


def store_cached(key: str, hashes: list[str], features: Features, failed: dict[str, str], *, zoo=None) -> None:
    """Write a feature set (rows in the order of the non-failed `hashes`) atomically, then enforce the cap."""
    directory = _cache_dir(zoo)
    directory.mkdir(parents=True, exist_ok=True)
    kept = [h for h in hashes if h not in failed]
    first_row: dict[str, int] = {}
    for row, content_hash in enumerate(kept):
        first_row.setdefault(content_hash, row)  # duplicate images: store once
    rows = list(first_row.values())
    unique = features.select(rows)
    tensors = {"final": unique.final.contiguous()}
    tensors |= {f"stage{k}": stage.contiguous() for k, stage in enumerate(unique.stages)}
    meta = {"hashes": json.dumps(list(first_row)), "failed": json.dumps(failed), "stages": str(len(unique.stages))}
    temporary = directory / f".{key}.{os.getpid()}.tmp"
    safetensors.torch.save_file(tensors, str(temporary), metadata=meta)
    os.replace(temporary, directory / f"{key}.safetensors")
    _enforce_cap(directory)


@torch.inference_mode()
def extract_features(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    spec: ModelSpec,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> Features:
    """One pass of a frozen timm model over uint8 NCHW batches -> every stage's pooled features."""
    model.eval()
    finals, stages = [], []
    for batch in batches:
        inputs = normalize(batch, spec)
        if hasattr(model, "forward_intermediates"):
            final_map, intermediates = model.forward_intermediates(inputs)
            stages.append([feature_map.mean(dim=(2, 3)) for feature_map in intermediates])
        else:  # older timm models: final features only (no cut-depth search)
            final_map = model.forward_features(inputs)
        finals.append(model.forward_head(final_map, pre_logits=True))
        if on_batch:
            on_batch(len(batch))
    stage_tensors = [torch.cat(per_stage) for per_stage in zip(*stages)] if stages else []
    return Features(torch.cat(finals), stage_tensors)


# --- the frozen fits' cached pass ------------------------------------------------------------------------


def cached_features(dataset: Dataset, model, weights: Weights, spec: ModelSpec, batch_size, zoo, run: Run,
                     decoded: tuple[list, list[str]] | None = None):
    """({split: Features}, {split: labels}, cache key): from the cache, or from one pass that fills it.

    decoded: (images, hashes) of train+val+test already decoded at spec.resized_side (trainable
    strategies have them); otherwise images are decoded here a chunk at a time and not kept.
    Images that fail to decode are reported and dropped from their split.
    """
    samples = dataset.train + dataset.val + dataset.test
    hashes = decoded[1] if decoded else content_hashes(dataset, samples)
    key = cache_key(weights.fingerprint, spec, hashes)
    features, failed = load_cached(key, hashes, zoo=zoo)
    if features is None:
        features, failed = feature_pass(dataset, samples, model, spec, batch_size, run, decoded)
        store_cached(key, hashes, features, failed, zoo=zoo)
        log.info("computed features of %d images (cache %s)", len(features.final), key[:8])
    else:
        log.info("features of %d images from the cache (%s)", len(features.final), key[:8])
        run.report(Progress("features", len(samples), len(samples), message="features from the cache"))
    drop_failed(dataset, {s.relpath: failed[h] for s, h in zip(samples, hashes) if h in failed})
    per_split, labels, row = {}, {}, 0
    for split, members in dataset.splits().items():
        per_split[split] = features.select(list(range(row, row + len(members))))
        labels[split] = [sample.label for sample in members]
        row += len(members)
    return per_split, labels, key


def feature_pass(dataset, samples, model, spec, batch_size, run: Run, decoded=None):
    """Decode (unless given) and run the frozen backbone once: (Features, {hash: reason} of failures).

    Images are decoded FEATURE_CHUNK at a time and not kept; the backbone runs with its BatchNorm
    folded into the convolutions (`zoo.model.fused_for_inference`)."""
    done = [0]

    def on_batch(count: int) -> None:
        done[0] += count
        run.report(Progress("features", done[0], len(samples), message="computing features"))
        if run.should_stop and run.should_stop():
            run.check()

    parts, failed = [], {}
    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last)
    model = fused_for_inference(model.eval(), example)  # BatchNorm folded into the convs: ~25% less CPU
    for start in range(0, len(samples), FEATURE_CHUNK):
        chunk = samples[start:start + FEATURE_CHUNK]
        if decoded:
            images = decoded[0][start:start + FEATURE_CHUNK]
        else:
            images, hashes, errors = decode_images(dataset, chunk, shorter_side=spec.resized_side,
                                                   should_stop=run.should_stop)
            failed |= {h: error for h, error in zip(hashes, errors) if error}
        ok = [image for image in images if image is not None]
        done[0] += len(images) - len(ok)
        crops = eval_crops(ok, spec)
        batches = (crops[i:i + batch_size] for i in range(0, len(crops), batch_size))
        parts.append(extract_features(model, batches, spec, on_batch=on_batch))
    final = torch.cat([part.final for part in parts])
    stages = [torch.cat([part.stages[k] for part in parts]) for k in range(len(parts[0].stages))]
    return Features(final, stages), failed


def _cache_dir(zoo) -> Path:
    return zoo_dir(zoo) / "cache" / "features"


def _enforce_cap(directory: Path) -> None:
    files = sorted(directory.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for path in files:
        total += path.stat().st_size
        if total > CACHE_CAP_BYTES and path is not files[0]:
            path.unlink(missing_ok=True)
            log.info("feature cache over %d MB: evicted %s", CACHE_CAP_BYTES >> 20, path.name)


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
        path = _cache_dir(zoo) / f"text-{key.hexdigest()[:32]}.safetensors"
        if path.is_file():
            try:
                with safetensors.safe_open(str(path), framework="pt") as handle:
                    stored = json.loads((handle.metadata() or {})["hashes"])
                    vectors = handle.get_tensor("embeddings")
                row_of = {h: row for row, h in enumerate(stored)}
                os.utime(path)
                return vectors[[row_of[h] for h in hashes]]
            except (OSError, KeyError, ValueError) as error:
                log.warning("ignoring unreadable text cache %s (%s)", path.name, error)
        from zoo.text import embed_texts

        unique = list(dict.fromkeys(zip(hashes, wanted)))
        vectors = embed_texts(name, [text for _, text in unique])
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        safetensors.torch.save_file({"embeddings": vectors.contiguous()}, str(temporary),
                                    metadata={"hashes": json.dumps([h for h, _ in unique])})
        os.replace(temporary, path)
        _enforce_cap(path.parent)
        row_of = {h: row for row, (h, _) in enumerate(unique)}
        return vectors[[row_of[h] for h in hashes]]

    return prepare_texts(encoder, texts, embed=embed)


def split_texts(dataset: Dataset, encoder: str, zoo, run: Run) -> dict[str, Any]:
    """{split: TextInputs} aligned with the dataset's (final) splits; frozen encoders use the cache."""
    run.report(Progress("text", 0, 1, message=f"encoding texts ({encoder})"))
    samples = dataset.train + dataset.val + dataset.test
    inputs = cached_text_inputs(encoder, [sample.text for sample in samples], zoo=zoo)
    per_split, row = {}, 0
    for split, members in dataset.splits().items():
        per_split[split] = inputs.select(range(row, row + len(members)))
        row += len(members)
    run.report(Progress("text", 1, 1, message="texts encoded"))
    return per_split
