"""Predict with a zoo model: load it once, then top-k labels for one image or a batch.

    from zoo.predict import ModelCache, predict
    cache = ModelCache()                                   # the app keeps one; the CLI one per run
    predict("cats-vs-dogs", ["a.jpg", "b.png"], top_k=3, cache=cache)
    # -> [[{"label": "cat", "score": 0.97}, ...], [...]]

Images go through `zoo.images` (any mode or size) and the model's own preprocessing, exactly as in
training. The cache is keyed by the model's name AND its content (the bytes of transfer.json and a
digest of model.safetensors, memoised per file version), and every request re-reads the entry,
so a replaced, re-imported or deleted model is never served stale. A model deleted or replaced
WHILE a request loads or uses it: a load retries on the new version (never old labels with new
weights), and a prediction checks, before it answers, that the model it used is still the one
under that name; if not, the request fails with a `ZooError` that says what happened.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from zoo import ZooError, zoo_dir
from zoo.catalog import load_model, read_entry
from zoo.files import file_digest
from zoo.images import ImageSource, open_image
from zoo.model import ModelSpec, center_crop_uint8, fused_for_inference, normalize
from zoo.store import ZooEntry


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    spec: ModelSpec
    entry: ZooEntry
    identity: tuple = ()  # what the model on disk was when loaded (see `_identity`); () if unknown
    root: str = ""  # the zoo it was loaded from

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class ModelCache:
    """A few loaded models, least recently used dropped first, on one device (`zoo.devices`:
    "auto" is CUDA, then MPS, else the CPU). Thread-safe."""

    def __init__(self, size: int = 4, *, device: str = "auto"):
        from zoo.devices import resolve_device

        self.size = size
        self.device = resolve_device(device)
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, *, zoo: str | Path | None = None) -> LoadedModel:
        entry = read_entry(name, zoo=zoo)  # raises ZooError if deleted or damaged
        key = (str(zoo_dir(zoo)), name, _identity(entry))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        for _ in range(3):  # a save may replace the model while it loads: load until it holds still
            try:
                model, entry = load_model(name, zoo=zoo)
            except ZooError:
                now = _current_identity(name, zoo)  # raises when it was deleted meanwhile
                if now == key[2]:
                    raise  # nothing changed: the model itself is at fault
                key = (*key[:2], now)  # replaced mid-load (old spec, new weights): load the new one
                continue
            loaded_key = (str(zoo_dir(zoo)), name, _identity(entry))
            if loaded_key == key:
                break
            key = loaded_key
        else:
            raise ZooError(f"Model '{name}' was replaced several times while it loaded; try again.")
        loaded = LoadedModel(name=name, model=_for_inference(model, entry.spec).to(self.device), spec=entry.spec,
                             entry=entry, identity=key[2], root=key[0])
        with self._lock:
            for old in [k for k in self._models if k[:2] == key[:2]]:
                del self._models[old]  # an older version of this model
            self._models[key] = loaded
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


def _for_inference(model: torch.nn.Module, spec: ModelSpec) -> torch.nn.Module:
    """Channels-last, BatchNorm folded into the convolutions (checked on the CPU; unchanged when it
    does not fit)."""
    model = model.eval().to(memory_format=torch.channels_last)
    example = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last)
    if spec.text is None:
        return fused_for_inference(model, example)
    model.image = fused_for_inference(model.image, example)
    return model


def predict(
    model: str | LoadedModel,
    images: Sequence[ImageSource | None],
    *,
    texts: Sequence[str | None] | None = None,
    top_k: int = 5,
    zoo: str | Path | None = None,
    cache: ModelCache | None = None,
    device: str = "auto",
) -> list[list[dict[str, Any]]]:
    """For each image, the top-k {"label", "score"} (scores are probabilities, highest first).

    texts: for image+text models, one text per image (None or "" where there is none); an image
    may be None where only the text is known. Either alone still gives an answer. device: where a
    model named here is loaded (a `cache` keeps its own device)."""
    if top_k < 1:
        raise ZooError(f"top_k must be 1 or more, not {top_k}.")
    if isinstance(images, (str, Path, bytes, Image.Image)) or hasattr(images, "read"):
        images = [images]  # one image (a path, bytes, an open file or a PIL image), not a batch
    loaded = model if isinstance(model, LoadedModel) else (cache or ModelCache(1, device=device)).get(model, zoo=zoo)
    probs = probabilities(loaded, images, texts=texts)
    if loaded.identity:  # loaded by a ModelCache (by this call or the caller's)
        _still_current(loaded)  # deleted or replaced while we used it: no answer from a ghost
    k = max(1, min(top_k, loaded.spec.num_classes))
    scores, indices = probs.topk(k, dim=1)
    return [
        [{"label": loaded.spec.label_names[i], "score": round(float(s), 6)} for s, i in zip(row_s, row_i)]
        for row_s, row_i in zip(scores.tolist(), indices.tolist())
    ]


def probabilities(loaded: LoadedModel, images: Sequence[ImageSource | None], batch_size: int = 32,
                  texts: Sequence[str | None] | None = None) -> torch.Tensor:
    """(N, classes) softmax probabilities (on the CPU) for `images` (and `texts`, for image+text models),
    computed on the device the model is on."""
    spec, device = loaded.spec, loaded.device
    count = max(len(images or []), len(texts or []))
    if texts is not None and any(texts) and spec.text is None:
        raise ZooError(f"Model '{loaded.name}' takes images only; leave the text out.")
    if texts is not None and images and len(texts) != len(images):
        raise ZooError(f"Got {len(images)} images but {len(texts)} texts; give one text per image.")
    images = list(images) if images else [None] * count
    if not count or (all(image is None for image in images) and not (texts and any(texts) and spec.text)):
        raise ZooError("Nothing to predict from: give an image" + (" or a text." if spec.text else "."))
    blank = torch.zeros(3, spec.image_size, spec.image_size, dtype=torch.uint8)
    crops = [blank if image is None else center_crop_uint8(open_image(image, shorter_side=spec.resized_side), spec)
             for image in images]
    has_image = torch.tensor([image is not None for image in images])
    text = None
    if spec.text is not None:
        from zoo.text import prepare_texts

        text = prepare_texts(spec.text["encoder"], list(texts) if texts is not None else [None] * count)
    outputs = []
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            rows = range(start, min(start + batch_size, count))
            batch = normalize(torch.stack(crops[start:start + batch_size]).to(device), spec)
            if text is None:
                logits = loaded.model(batch)
            else:
                logits = loaded.model(batch, text.select(rows),
                                      image_present=has_image[start:start + batch_size].to(device))
            outputs.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(outputs)


def _current_identity(name: str, zoo: str | Path | None) -> tuple:
    """The identity of what the zoo holds under `name` now; `ZooError` when it was deleted."""
    try:
        return _identity(read_entry(name, zoo=zoo))
    except ZooError:
        raise ZooError(f"Model '{name}' was deleted while this request used it; nothing was predicted. "
                       "Pick another model.") from None


def _still_current(loaded: LoadedModel) -> None:
    """`ZooError` unless the zoo still holds, under `loaded.name`, the very model that was used."""
    if _current_identity(loaded.name, loaded.root) != loaded.identity:
        raise ZooError(f"Model '{loaded.name}' was replaced while this request used it; nothing was predicted. "
                       "Try again: the new version will answer.")


def _identity(entry: ZooEntry) -> tuple:
    """What the model IS: transfer.json's bytes (they differ between any two saves) and a digest
    of the weights, memoised per file version (inode, size, times), so a request costs a stat."""
    if entry.builtin:  # weights from the installed package: its version is their identity
        return ("builtin", json.dumps(entry.info.get("builtin"), sort_keys=True))
    try:
        description = (entry.path / "transfer.json").read_bytes()
        weights = file_digest(entry.path / "model.safetensors")
    except FileNotFoundError:
        raise ZooError(f"Model '{entry.name}' was removed or replaced just now; try again.") from None
    return hashlib.sha256(description).hexdigest(), weights


def explain(model: str | LoadedModel, image: ImageSource, target: str | int | None = None, **options):
    """Grad-CAM: the heatmap and overlay of what made the model choose `target` (None: its top class).

    The same as `zoo.explain.explain` (see there for the options); kept here beside `predict`."""
    from zoo.explain import explain as grad_cam  # imports this module: load it only when asked

    return grad_cam(model, image, target, **options)
