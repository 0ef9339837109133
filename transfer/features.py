"""Frozen features: one forward pass of the frozen backbone, streamed, cached, reused by every frozen fit.

One pass over the images records, per image, the pooled output of EVERY backbone stage plus the
final pre-logits features (timm's `forward_intermediates`). `feature-extractor` trains its head on
the final features, `shallow` probes each stage to choose its cut, `fine-tune` warms its head up on
them, and a repeat fit of the same data and backbone (or `compare`) skips the pass altogether
(`transfer.feature_cache`: keyed by the weights, the input settings and the images' contents).

The pass streams: images are read and decoded in the loader's workers a batch at a time (or taken
from the scan's decoded images on the fast path), run on the engine's device with BatchNorm folded
into the convolutions (`zoo.model.fused_for_inference`) under the engine's autocast, and each chunk
of `FEATURE_CHUNK` images is written to the cache as soon as it is done. With several processes
each computes its own chunks and all get every chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
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
from transfer.loading import ImageFiles, Scan, loader, scan_images
from transfer.progress import Progress, Run
from zoo.model import ModelSpec, center_crop_uint8, fused_for_inference, normalize
from zoo.weights import Weights

log = logging.getLogger(__name__)

FEATURE_CHUNK = 1024  # images per cached part: what a cancelled pass keeps


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
    drop_failed(dataset, {s.relpath: failed[h] for s, h in zip(samples, hashes) if h in failed})
    per_split, labels, row = {}, {}, 0
    for split, members in dataset.splits().items():
        per_split[split] = features.select(list(range(row, row + len(members))))
        labels[split] = [sample.label for sample in members]
        row += len(members)
    return per_split, labels, key


def feature_pass(dataset, samples, model, spec, batch_size, run: Run, *, hashes: list[str] | None = None,
                 key: str | None = None, zoo=None, images=None) -> tuple[Features, dict[str, str]]:
    """Run the frozen backbone once over `samples`: (Features of the images that decode, {hash: reason}
    of those that do not). With a cache `key`, each chunk is stored as a part when done and parts of
    an earlier, unfinished pass are reused (see `transfer.feature_cache`)."""
    engine = run.engine
    hashes = hashes or [f"row:{row}" for row in range(len(samples))]
    done = [0]

    def on_batch(count: int) -> None:
        done[0] += count
        run.report(Progress("features", min(done[0] * engine.world_size, len(samples)), len(samples),
                            message="computing features"))
        run.check_stop()

    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last)
    model = fused_for_inference(model.eval(), example)  # BatchNorm folded into the convs: ~25% less CPU
    model = model.to(engine.device, memory_format=torch.channels_last)
    chunks = range(0, len(samples), FEATURE_CHUNK)
    mine = [start for number, start in enumerate(chunks) if number % engine.world_size == engine.rank]
    computed: list[tuple[int, Features, dict[str, str]]] = []
    for start in mine:
        rows = range(start, min(start + FEATURE_CHUNK, len(samples)))
        chunk_hashes = [hashes[row] for row in rows]
        stored = load_part(key, start // FEATURE_CHUNK, chunk_hashes, zoo=zoo) if key else None
        if stored is None:
            stored = _chunk_features(dataset, [samples[row] for row in rows], model, spec, batch_size, engine,
                                     None if images is None else [images[row] for row in rows], on_batch)
            stored = (stored[0], {chunk_hashes[index]: reason for index, reason in stored[1].items()})
            if key:
                store_part(key, start // FEATURE_CHUNK, chunk_hashes, *stored, zoo=zoo)
        else:
            on_batch(len(rows))
        computed.append((start, *stored))
    if engine.distributed:  # every process gets every chunk
        computed = sorted(engine.gather_objects(computed), key=lambda item: item[0])
    failed = {digest: reason for _, _, part_failed in computed for digest, reason in part_failed.items()}
    return Features.concatenate([features for _, features, _ in computed]), failed


def _chunk_features(dataset, samples, model, spec, batch_size, engine, images, on_batch) -> tuple[Features, dict[int, str]]:
    """Features of one chunk, and {row in the chunk: reason} for the images that do not decode."""
    files = ImageFiles(dataset, samples, shorter_side=spec.resized_side, transform=partial(center_crop_uint8, spec=spec),
                       images=images)
    failed: dict[int, str] = {}

    def batches():
        # the chunks are already divided between the processes: this loader is not sharded
        for crops, labels, rows in loader(files, batch_size=batch_size, engine=engine.local()):
            ok = labels >= 0
            for row in rows[~ok].tolist():
                failed[row] = _decode_error(files, row)
            if ok.any():
                yield crops[ok]
            on_batch(int((~ok).sum()))

    return extract_features(model, batches(), spec, engine=engine, on_batch=on_batch), failed


def _decode_error(files: ImageFiles, row: int) -> str:
    """Why image `row` does not decode (it is decoded again, in this process, to say it)."""
    try:
        files.decode(row)
        return "could not be decoded"
    except Exception as error:  # the reason, whatever Pillow raised
        return str(error).removeprefix(f"{files.samples[row].relpath}: ")


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
