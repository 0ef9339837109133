"""Predict with a zoo model: load it once, then top-k labels for one image or a batch.

    from zoo.predict import ModelCache, predict
    cache = ModelCache()                                   # the app keeps one; the CLI one per run
    predict("cats-vs-dogs", ["a.jpg", "b.png"], top_k=3, cache=cache)
    # -> [[{"label": "cat", "score": 0.97}, ...], [...]]

Images go through `zoo.images` (any mode or size) and the model's own preprocessing, exactly as in
training. Models are loaded once by a `ModelCache` (`zoo.loaded`: keyed by content, so never
stale); a prediction checks, before it answers, that the model it used is still the one under that
name, and fails with a `ZooError` that says what happened if not. `explain` (Grad-CAM) is
`zoo.explain`'s, here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from zoo import ZooError
from zoo.images import ImageSource, open_image
from zoo.loaded import LoadedModel, ModelCache, still_current
from zoo.model import center_crop_uint8, normalize

__all__ = ["LoadedModel", "ModelCache", "explain", "predict", "probabilities"]


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
        still_current(loaded)  # deleted or replaced while we used it: no answer from a ghost
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


def explain(model: str | LoadedModel, image: ImageSource, target: str | int | None = None, **options):
    """Grad-CAM: the heatmap and overlay of what made the model choose `target` (None: its top class).

    The same as `zoo.explain.explain` (see there for the options); kept here beside `predict`."""
    from zoo.explain import explain as grad_cam  # grad-cam (and scikit-learn, matplotlib): only when asked

    return grad_cam(model, image, target, **options)
