"""A dataset's pixels, streamed: `torch.utils.data` over the validated samples.

    scan = scan_images(dataset, samples, shorter_side=146, engine=engine)   # once per fit
    files = ImageFiles(dataset, samples, shorter_side=146, transform=..., images=scan.images)
    for images, labels, rows in loader(files, batch_size=32, shuffle=True, seed=0, engine=engine): ...

`scan_images` reads every image once, decoding on a small thread pool: the sha1 of its bytes (what
feature caches are keyed by), whether it decodes (a file that does not is reported by name and
dropped), and, when the decoded images fit `MEMORY_BUDGET_MB` and the fit runs in one process, the
images themselves, resized once to the fit's size (the fast path: no decoding every epoch).
Otherwise `ImageFiles` reads and decodes each image when a batch needs it, in the loader's worker
processes, so memory does not grow with the number of images. Either way every image goes through
`zoo.images.open_image`, as in prediction. Files are read through the upload limits
(`transfer.uploads`); a zip is opened once per process.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch
from PIL import Image

from transfer import Cancelled, DataError
from transfer.data import Dataset, Sample
from transfer.engine import cpu_engine
from transfer.uploads import ReadBudget, UnreadableEntry, size_text
from zoo.images import ImageError, open_image

MEMORY_BUDGET_MB = int(os.environ.get("TRANSFER_MEMORY_MB", 1024))  # decoded images kept in memory, at most
BROKEN = -100  # the label of an image that could not be read during the fit
SCAN_THREADS = max(1, min(4, os.cpu_count() or 1))  # decoding threads of the scan
SCAN_WINDOW = 8 * SCAN_THREADS  # files read ahead of the decoding threads


class SampleReader:
    """Random access to a dataset's files, for any process: a zip is opened once per process (a forked
    loader worker opens its own). Every file is read within the upload limits, except the total,
    which the scan counted once (later epochs read the same bytes again)."""

    def __init__(self, dataset: Dataset):
        self.source, self.prefix, self.is_zip = dataset.source, dataset.prefix, dataset.is_zip
        self.limits = replace(dataset.limits, max_total_bytes=1 << 62)
        self._archive: zipfile.ZipFile | None = None
        self._pid = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_archive": None, "_pid": None}

    def read(self, relpath: str) -> bytes:
        """The file's bytes; `ImageError` for a damaged zip member; `DataError` past a limit."""
        budget = ReadBudget(self.limits)
        if not self.is_zip:
            return budget.read_file(self.source / self.prefix / relpath, relpath)
        if self._archive is None or self._pid != os.getpid():
            self._archive, self._pid = zipfile.ZipFile(self.source), os.getpid()
        try:
            return budget.read_member(self._archive, self._archive.getinfo(self.prefix + relpath), relpath)
        except UnreadableEntry as problem:
            raise ImageError(f"{relpath}: {problem}") from None


class ImageFiles(torch.utils.data.Dataset):
    """`samples` as (image tensor, label, row) for a DataLoader: `transform(PIL image)` of each image,
    decoded at `shorter_side` (or taken from `images`, the decoded images kept by the scan). A file
    that no longer decodes gives the label BROKEN; `check_batch` names it. (Unlabelled images, the
    target domain's, have the label -1.)"""

    def __init__(self, dataset: Dataset, samples: Sequence[Sample], *, shorter_side: int,
                 transform: Callable[[Image.Image], torch.Tensor], images: Sequence[Image.Image] | None = None,
                 max_pixels: int | None = None):
        self.samples, self.shorter_side, self.transform, self.images = list(samples), shorter_side, transform, images
        self.reader = SampleReader(dataset)
        self.max_pixels = max_pixels or dataset.limits.max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([sample.label for sample in self.samples])

    def decode(self, row: int) -> Image.Image:
        sample = self.samples[row]
        content = self.reader.read(sample.relpath)
        return open_image(content, shorter_side=self.shorter_side, max_pixels=self.max_pixels, name=sample.relpath)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int, int]:
        try:
            image = self.images[row] if self.images is not None else self.decode(row)
        except (ImageError, DataError, OSError):  # reported by check_batch, in the training process
            return torch.zeros(3, 1, 1, dtype=torch.uint8), BROKEN, row
        return self.transform(image), self.samples[row].label, row

    def check_batch(self, labels: torch.Tensor, rows: torch.Tensor) -> None:
        """`DataError` naming the first image of a batch that could not be read (it decoded at the scan:
        the file changed or went away during the fit)."""
        broken = (labels == BROKEN).nonzero().flatten()
        if len(broken):
            row = int(rows[broken[0]])
            try:
                self.decode(row)
                reason = "could not be read"
            except (ImageError, DataError, OSError) as error:
                reason = str(error).removeprefix(f"{self.samples[row].relpath}: ")
            raise DataError(f"{self.samples[row].relpath} changed during the fit and {reason}; "
                            "keep the data unchanged while training")


def collate_images(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack a batch; a broken item (label BROKEN, see `ImageFiles`) is padded to the others' shape."""
    shape = next((image.shape for image, label, _ in items if label != BROKEN), items[0][0].shape)
    images = [image if image.shape == shape else torch.zeros(shape, dtype=image.dtype) for image, _, _ in items]
    return (torch.stack(images), torch.tensor([label for _, label, _ in items]),
            torch.tensor([row for _, _, row in items]))


def loader(files: ImageFiles, *, batch_size: int, engine, shuffle: bool = False, seed: int = 0,
           drop_last: bool = False, sample_weights: torch.Tensor | None = None) -> torch.utils.data.DataLoader:
    """A DataLoader over `files` (pinned memory on CUDA), sharded between processes when there are
    several. Seeded: the same seed gives the same batches and augmentation. sample_weights: each
    epoch draws len(files) images with replacement in proportion to them (instead of shuffling).

    Images in memory are cropped and augmented in this process (passing them to other processes
    costs more than that). Images read from disk are read and decoded by the engine's workers,
    started from a clean process (`forkserver`): a forked copy of a server (the app) would hold its
    sockets and keep every connection open."""
    workers = 0 if files.images is not None else engine.workers
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if sample_weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(sample_weights, len(files), replacement=True,
                                                         generator=generator)
    data = torch.utils.data.DataLoader(
        files, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, drop_last=drop_last,
        num_workers=workers,
        pin_memory=engine.pin_memory, persistent_workers=workers > 0, collate_fn=collate_images,
        generator=generator, prefetch_factor=4 if workers else None,
        multiprocessing_context=_worker_context() if workers else None,
    )
    return engine.prepare_loader(data)


def _worker_context():
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["torch", "timm", "transfer.loading"])  # workers start in a blink
    return context


# --- the scan: every image read once -----------------------------------------------------------------


@dataclass
class Scan:
    hashes: list[str]  # sha1 of each sample's file bytes, aligned with the samples
    errors: list[str | None]  # why a sample cannot be used (None: it decodes)
    images: list[Image.Image | None] | None = None  # decoded at shorter_side, when kept in memory

    @property
    def failed(self) -> dict[int, str]:
        return {row: error for row, error in enumerate(self.errors) if error}

    def without(self, rows) -> "Scan":
        """The scan of the other samples (e.g. without those that failed)."""
        keep = [row for row in range(len(self.hashes)) if row not in rows]
        return Scan([self.hashes[row] for row in keep], [self.errors[row] for row in keep],
                    [self.images[row] for row in keep] if self.images is not None else None)


def fits_in_memory(count: int, shorter_side: int, engine) -> bool:
    """Keep the decoded images (the fast path) when they fit MEMORY_BUDGET_MB and there is one process."""
    estimate = count * shorter_side * round(shorter_side * 4 / 3) * 3  # RGB, a 4:3 picture
    return engine.world_size == 1 and estimate <= MEMORY_BUDGET_MB << 20


def scan_images(dataset: Dataset, samples: Sequence[Sample], *, shorter_side: int, engine=None,
                keep: bool | None = None, decode: bool = True,
                on_progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> Scan:
    """Read every sample once (see the module docstring). keep: keep the decoded images (None: when
    they fit in memory); decode=False only hashes the bytes. Files are read in order and decoded on
    a small thread pool (Pillow releases the GIL), a bounded window at a time. With several
    processes each reads its share and all get every result. The upload limits hold over the whole
    read (a limit exceeded raises `DataError`, and the upload is refused)."""
    engine = engine or cpu_engine()
    keep = fits_in_memory(len(samples), shorter_side, engine) if keep is None else keep
    reader, files = SampleReader(dataset), ImageFiles(dataset, samples, shorter_side=shorter_side, transform=_unchanged)
    budget, total, found, window = dataset.limits.max_total_bytes, 0, [], []

    def look(item: tuple[int, bytes | None, str | None]) -> tuple[int, str, str | None, Image.Image | None]:
        row, content, problem = item
        if content is None:
            return row, f"unreadable:{samples[row].relpath}", problem, None
        digest, image = hashlib.sha1(content).hexdigest(), None
        if decode:
            try:
                image = open_image(content, shorter_side=shorter_side, max_pixels=files.max_pixels,
                                   name=samples[row].relpath)
            except ImageError as error:
                return row, digest, str(error).removeprefix(f"{samples[row].relpath}: "), None
        return row, digest, None, image if keep else None

    with ThreadPoolExecutor(SCAN_THREADS) as pool:

        def flush() -> None:  # at most one window of file contents in memory
            found.extend(pool.map(look, window))
            window.clear()
            if on_progress:
                on_progress(len(found) * engine.world_size, len(samples))
            if should_stop and should_stop():
                raise Cancelled("stopped while reading images")

        for row in engine.my_share(len(samples)):
            try:
                content, problem = reader.read(samples[row].relpath), None
            except ImageError as error:  # a damaged zip member: skipped, with the reason
                content, problem = None, str(error).removeprefix(f"{samples[row].relpath}: ")
            total += len(content or b"")
            if total > budget:
                raise DataError(f"the data is larger than {size_text(budget)} in all (reached at "
                                f"{samples[row].relpath}); use fewer or smaller images")
            window.append((row, content, problem))
            if len(window) >= SCAN_WINDOW:
                flush()
        flush()
    if engine.distributed:  # every process gets every result (images are never kept with several)
        found = engine.gather_objects([(row, digest, error, None) for row, digest, error, _ in found])
    found.sort(key=lambda item: item[0])
    return Scan(hashes=[item[1] for item in found], errors=[item[2] for item in found],
                images=[item[3] for item in found] if keep else None)


def _unchanged(value):
    return value
