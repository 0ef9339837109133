"""Loading a dataset's pixels: each image decoded once, at the size a fit needs, with its content hash.

Decoding runs on a small thread pool (Pillow releases the GIL), one bounded window of file contents
at a time. Every image goes through `zoo.images.open_image`, as in prediction, so a model sees the
same pixels in both; an image that fails to decode is reported by name with the reason.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from transfer import Cancelled
from transfer.data import Dataset, Sample
from transfer.uploads import UnreadableEntry
from zoo.images import ImageError, open_image


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
