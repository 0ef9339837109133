"""Frozen features: one forward pass of the frozen backbone, streamed, cached, reused by every frozen fit.

One pass over the images records, per image, the pooled output of EVERY backbone stage plus the
final pre-logits features (timm's `forward_intermediates`). `feature-extractor` trains its head on
the final features, `shallow` probes each stage to choose its cut, `fine-tune` warms its head up on
them, and a repeat fit of the same data and backbone (or `compare`) skips the pass altogether
(`transfer.feature_cache`: keyed by the weights, the input settings and the images' contents).

The pass streams: `FEATURE_CHUNK` images at a time are read and decoded on a thread pool (while
the previous chunk runs through the backbone), or taken from the scan's decoded images on the fast
path; they run on the engine's device with BatchNorm folded into the convolutions
(`zoo.model.fused_for_inference`) under the engine's autocast, and each chunk is written to the
cache as soon as it is done. With several processes each computes its own chunks and all get every
chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from transfer.data import Dataset, drop_failed
from transfer.engine import cpu_engine
from transfer.feature_cache import (
    Features,
    cache_key,
    cached_text_inputs,
    load_cached,
    load_part,
    store_cached,
    store_part,
)
from transfer.loading import Scan, scan_images
from transfer.progress import Progress, Run
from zoo.model import ModelSpec, center_crop_uint8, fused_for_inference, normalize
from zoo.weights import Weights

log = logging.getLogger(__name__)

FEATURE_CHUNK = 512  # images per cached part (what a cancelled pass keeps), decoded at a time


@torch.inference_mode()
def extract_features(model: torch.nn.Module, batches: Iterable[torch.Tensor], spec: ModelSpec, *, engine=None,
                     on_batch: Callable[[int], None] | None = None) -> Features:
    """One pass of a frozen timm model over uint8 NCHW batches -> every stage's pooled features (float32, CPU)."""
    engine = engine or cpu_engine()
    model.eval()
    finals, stages = [], []
    for batch in batches:
        inputs = normalize(engine.to_device(batch), spec)
        with engine.autocast():
            if hasattr(model, "forward_intermediates"):
                final_map, intermediates = model.forward_intermediates(inputs)
                stages.append([feature_map.float().mean(dim=(2, 3)).cpu() for feature_map in intermediates])
            else:  # older timm models: final features only (no cut-depth search)
                final_map = model.forward_features(inputs)
            finals.append(model.forward_head(final_map, pre_logits=True).float().cpu())
        if on_batch:
            on_batch(len(batch))
    stage_tensors = [torch.cat(per_stage) for per_stage in zip(*stages)] if stages else []
    return Features(torch.cat(finals) if finals else torch.empty(0), stage_tensors)


def cached_features(dataset: Dataset, model, weights: Weights, spec: ModelSpec, batch_size, zoo, run: Run,
                    scan: Scan | None = None):
    """({split: Features}, {split: labels}, cache key): from the cache, or from one pass that fills it.

    scan: the images' scan, when the fit has one (trainable strategies; its decoded images are used
    when it kept them); otherwise the files are hashed here (no decoding) to find the cache entry.
    Images that fail to decode are reported and dropped from their split.
    """
    samples = dataset.train + dataset.val + dataset.test
    features, failed, hashes, key = features_of(dataset, samples, model, weights, spec, batch_size, zoo, run, scan)
    drop_failed(dataset, {s.relpath: failed[h] for s, h in zip(samples, hashes) if h in failed})
    per_split, labels, row = {}, {}, 0
    for split, members in dataset.splits().items():
        per_split[split] = features.select(list(range(row, row + len(members))))
        labels[split] = [sample.label for sample in members]
        row += len(members)
    return per_split, labels, key


def features_of(dataset: Dataset, samples, model, weights: Weights, spec: ModelSpec, batch_size, zoo, run: Run,
                scan: Scan | None = None) -> tuple[Features, dict[str, str], list[str], str]:
    """(features of the `samples` that decode, {hash: reason} of those that do not, every sample's
    content hash, cache key): from the cache, or from one pass that fills it (see `cached_features`)."""
    hashes = scan.hashes if scan else scan_images(dataset, samples, shorter_side=spec.resized_side, decode=False,
                                                  engine=run.engine, should_stop=run.should_stop).hashes
    key = cache_key(weights.fingerprint, spec, hashes)
    features, failed = load_cached(key, hashes, zoo=zoo)
    if features is None:
        features, failed = feature_pass(dataset, samples, model, spec, batch_size, run, hashes=hashes, key=key,
                                        zoo=zoo, images=scan.images if scan else None)
        if run.engine.is_main:
            store_cached(key, hashes, features, failed, zoo=zoo)
        log.info("computed features of %d images (cache %s)", len(features.final), key[:8])
    else:
        log.info("features of %d images from the cache (%s)", len(features.final), key[:8])
        run.report(Progress("features", len(samples), len(samples), message="features from the cache"))
    return features, failed, hashes, key


def feature_pass(dataset, samples, model, spec, batch_size, run: Run, *, hashes: list[str] | None = None,
                 key: str | None = None, zoo=None, images=None) -> tuple[Features, dict[str, str]]:
    """Run the frozen backbone once over `samples`: (Features of the images that decode, {hash: reason}
    of those that do not). With a cache `key`, each chunk is stored as a part when done and parts of
    an earlier, unfinished pass are reused (see `transfer.feature_cache`).

    images: the samples' decoded images, when the fit has them; otherwise each chunk is decoded on
    a thread pool while the previous one runs through the backbone."""
    engine = run.engine
    hashes = hashes or [f"row:{row}" for row in range(len(samples))]
    done = [0]

    def on_batch(count: int) -> None:
        done[0] += count
        run.report(Progress("features", min(done[0] * engine.world_size, len(samples)), len(samples),
                            message="computing features"))
        run.check_stop()

    def rows_of(start: int) -> range:
        return range(start, min(start + FEATURE_CHUNK, len(samples)))

    def decode(start: int) -> Scan:
        return scan_images(dataset, [samples[row] for row in rows_of(start)], shorter_side=spec.resized_side,
                           engine=engine.local(), keep=True, should_stop=run.should_stop)

    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last)
    model = fused_for_inference(model.eval(), example)  # BatchNorm folded into the convs: ~25% less CPU
    model = model.to(engine.device, memory_format=torch.channels_last)
    chunks = range(0, len(samples), FEATURE_CHUNK)
    mine = [start for number, start in enumerate(chunks) if number % engine.world_size == engine.rank]
    stored = {start: load_part(key, start // FEATURE_CHUNK, [hashes[row] for row in rows_of(start)], zoo=zoo)
              if key else None for start in mine}
    for start in mine:
        if stored[start] is not None:  # finished by an earlier pass
            on_batch(len(rows_of(start)))
    missing = [start for start in mine if stored[start] is None]
    with ThreadPoolExecutor(1) as ahead:  # decodes the next chunk while this one runs
        decoding = {}
        for position, start in enumerate(missing):
            if images is None:
                for upcoming in missing[position:position + 2]:
                    if upcoming not in decoding:
                        decoding[upcoming] = ahead.submit(decode, upcoming)
                chunk = decoding.pop(start).result()
            else:
                chunk = Scan(hashes=[], errors=[None] * len(rows_of(start)), images=[images[row] for row in rows_of(start)])
            features = _chunk_features(chunk.images, model, spec, batch_size, engine, on_batch)
            chunk_hashes = [hashes[row] for row in rows_of(start)]
            failed = {chunk_hashes[index]: reason for index, reason in enumerate(chunk.errors) if reason}
            if key:
                store_part(key, start // FEATURE_CHUNK, chunk_hashes, features, failed, zoo=zoo)
            stored[start] = (features, failed)
    computed = [(start, *stored[start]) for start in mine]
    if engine.distributed:  # every process gets every chunk
        computed = sorted(engine.gather_objects(computed), key=lambda item: item[0])
    failed = {digest: reason for _, _, part_failed in computed for digest, reason in part_failed.items()}
    return Features.concatenate([features for _, features, _ in computed]), failed


def _chunk_features(images, model, spec, batch_size, engine, on_batch) -> Features:
    """Features of a chunk's decoded images (None: an image that did not decode, left out)."""
    crops = [center_crop_uint8(image, spec) for image in images if image is not None]
    on_batch(len(images) - len(crops))
    batches = (torch.stack(crops[start:start + batch_size]) for start in range(0, len(crops), batch_size))
    return extract_features(model, batches, spec, engine=engine, on_batch=on_batch)


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
