"""ONNX export: a zoo model as one `.onnx` file that runs anywhere onnxruntime does.

    from zoo.onnx_export import export_onnx, onnx_feeds     # export_onnx also in zoo.store
    done = export_onnx("my-model", output="my-model.onnx")  # checked before it returns
    session = onnxruntime.InferenceSession(str(done.path))
    logits, probabilities = session.run(None, onnx_feeds(done.spec, ["a.jpg"]))

The graph (torch.onnx's TorchScript exporter, opset 17) takes a batch of any size:

    image            float32 (N, 3, S, S): RGB, shorter side resized to `resize_shorter_side`
                     (bicubic), centre-cropped to S x S, scaled to [0, 1], minus mean, over std
    text_embedding   image+text models with a frozen text encoder (MiniLM): float32 (N, dim), the
                     encoder's L2-normalised sentence embedding; an all-zero row means "no text"
    text_ngram_ids   image+text models with the hashing encoder: int64 (N, L), the ids of
                     `zoo.text.hashed_ngrams(text)` padded with -1; a row of -1 means "no text"
    -> logits, probabilities   float32 (N, classes)

Everything needed to prepare those inputs travels in the file's metadata (`metadata_props`):
label_names, mean, std, input_size, resize_shorter_side, interpolation, crop_pct, text_input and a
plain-words `preprocessing`. Before an export is reported done, onnxruntime runs it on a batch of
another size than the one traced and its probabilities are compared with the PyTorch model's
(at most 1e-4 apart), so a file that would answer differently is never left behind.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo import ZooError
from zoo.catalog import load_model
from zoo.files import new_file, written_aside
from zoo.images import ImageSource, open_image
from zoo.model import ModelSpec, center_crop_uint8, normalize
from zoo.store import validate_name

OPSET = 17
TOLERANCE = 1e-4  # largest difference allowed between onnxruntime's and PyTorch's probabilities
OUTPUTS = ["logits", "probabilities"]


@dataclass
class OnnxExport:
    path: Path
    spec: ModelSpec
    size_bytes: int
    seconds: float  # export and check together
    max_difference: float  # largest |onnxruntime - PyTorch| over the checked probabilities
    inputs: list[str]


def export_onnx(name: str, *, output: str | Path | None = None, zoo: str | Path | None = None) -> OnnxExport:
    """Write zoo model `name` as an ONNX file (default `<name>.onnx` here; never replacing a file),
    check it against PyTorch with onnxruntime, and return where it is and how close it came."""
    started = time.monotonic()
    validate_name(name)
    output = new_file(output, Path.cwd() / f"{name}.onnx", ".onnx")
    model, entry = load_model(name, zoo=zoo)
    spec = entry.spec
    graph = _Exported(model, spec).eval()  # eval: the exporter restores every submodule to the wrapper's mode
    inputs = input_names(spec)
    example = _check_inputs(spec, batch=2, seed=0)
    with written_aside(output) as partial:  # in place only once the check has passed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(graph, tuple(example.values()), str(partial), dynamo=False, opset_version=OPSET,
                              input_names=inputs, output_names=OUTPUTS, dynamic_axes=_dynamic_axes(inputs))
        _write_metadata(partial, name, entry.info, spec)
        difference = check_against_pytorch(partial, model, spec)
    return OnnxExport(path=output, spec=spec, size_bytes=output.stat().st_size,
                      seconds=round(time.monotonic() - started, 2), max_difference=difference, inputs=inputs)


def input_names(spec: ModelSpec) -> list[str]:
    if spec.text is None:
        return ["image"]
    return ["image", "text_ngram_ids" if spec.text["encoder"] == "hashing" else "text_embedding"]


def onnx_feeds(spec: ModelSpec, images: Sequence[ImageSource], texts: Sequence[str | None] | None = None
               ) -> dict[str, np.ndarray]:
    """The exported graph's inputs for `images` (and, for image+text models, `texts`), prepared
    exactly as `zoo.predict` prepares them for PyTorch."""
    crops = torch.stack([center_crop_uint8(open_image(image, shorter_side=spec.resized_side), spec)
                         for image in images])
    feeds = {"image": np.ascontiguousarray(normalize(crops, spec).numpy())}
    if spec.text is not None:
        from zoo.text import prepare_texts

        prepared = prepare_texts(spec.text["encoder"], list(texts) if texts is not None else [None] * len(images))
        name = input_names(spec)[1]
        feeds[name] = _padded(prepared.token_ids) if prepared.token_ids is not None else prepared.features.numpy()
    return feeds


def check_against_pytorch(path: Path, model: torch.nn.Module, spec: ModelSpec) -> float:
    """Run the file with onnxruntime on a batch of 3 and compare its probabilities with the PyTorch
    model's own forward (not the export wrapper's); `ZooError` when they differ by more than 1e-4."""
    import onnxruntime

    feeds = _check_inputs(spec, batch=3, seed=1)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, got = session.run(OUTPUTS, {name: value.numpy() for name, value in zip(input_names(spec), feeds.values())})
    with torch.inference_mode():
        if spec.text is None:
            logits = model(feeds["image"])
        else:
            logits = model(feeds["image"], _text_inputs(spec, feeds))
    expected = logits.float().softmax(dim=1).numpy()
    difference = float(np.abs(got - expected).max())
    if not difference <= TOLERANCE:
        raise ZooError(f"The ONNX file answers differently from the PyTorch model (probabilities up to "
                       f"{difference:.2g} apart, more than {TOLERANCE:g}); nothing was written.")
    return difference


# --- the graph ---------------------------------------------------------------------------------------


class _Exported(torch.nn.Module):
    """image (and text) -> (logits, probabilities), with "no text" read from the text input itself."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec):
        super().__init__()
        self.model = model
        self.text_kind = None if spec.text is None else ("ids" if spec.text["encoder"] == "hashing" else "vector")

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None):
        if self.text_kind is None:
            logits = self.model(image)
        else:
            if self.text_kind == "ids":  # EmbeddingBag(mode="mean") written as a masked mean of a Gather
                mask = (text >= 0).unsqueeze(-1)
                vectors = self.model.text.bag.weight[text.clamp(min=0)] * mask
                features = vectors.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
                present = mask.squeeze(-1).any(dim=1)
            else:
                features, present = text, text.abs().sum(dim=1) > 0
            # `ImageTextClassifier.fuse` with the image always there, its batch size taken from the
            # tensors (fuse's len() would be traced as the example's constant)
            seen = self.model.image_proj(self.model.image(image))
            read = torch.where(present[:, None], self.model.text_proj(features), self.model.absent_text.expand_as(seen))
            logits = self.model.head(torch.cat([seen, read], dim=1))
        return logits, logits.softmax(dim=1)


def _dynamic_axes(inputs: list[str]) -> dict[str, dict[int, str]]:
    axes = {name: {0: "batch"} for name in [*inputs, *OUTPUTS]}
    if "text_ngram_ids" in axes:
        axes["text_ngram_ids"][1] = "ngrams"
    return axes


def _check_inputs(spec: ModelSpec, *, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeded inputs in the graph's own format: images from random pixels; for image+text models
    texts of varied length (unit vectors or n-gram ids) and one row without text."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch, 3, spec.image_size, spec.image_size), dtype=torch.uint8, generator=generator)
    feeds = {"image": normalize(pixels, spec).contiguous()}
    if spec.text is None:
        return feeds
    if spec.text["encoder"] == "hashing":
        from zoo.text import HASHING_BUCKETS

        ids = torch.randint(0, HASHING_BUCKETS, (batch, 6), generator=generator)
        ids[0, 3:] = -1  # a shorter text
        ids[-1] = -1  # no text
        feeds["text"] = ids
    else:
        vectors = torch.randn(batch, spec.text["dim"], generator=generator)
        vectors = vectors / vectors.norm(dim=1, keepdim=True)
        vectors[-1] = 0  # no text
        feeds["text"] = vectors
    return feeds


def _text_inputs(spec: ModelSpec, feeds: dict[str, torch.Tensor]):
    """The check's text, as the PyTorch model itself takes it (`zoo.text.TextInputs`)."""
    from zoo.text import TextInputs

    text = feeds["text"]
    if spec.text["encoder"] == "hashing":
        return TextInputs(present=(text >= 0).any(dim=1), token_ids=[row[row >= 0] for row in text])
    return TextInputs(present=text.abs().sum(dim=1) > 0, features=text)


def _padded(token_ids: list[torch.Tensor]) -> np.ndarray:
    longest = max([1, *(len(ids) for ids in token_ids)])
    rows = np.full((len(token_ids), longest), -1, dtype=np.int64)
    for row, ids in enumerate(token_ids):
        rows[row, :len(ids)] = ids.numpy()
    return rows


def _write_metadata(path: Path, name: str, info: dict, spec: ModelSpec) -> None:
    """The preprocessing facts and the labels, in the ONNX file's own metadata."""
    import onnx

    text_input = "none"
    if spec.text is not None and spec.text["encoder"] == "hashing":
        text_input = ("text_ngram_ids: int64 (N, L), zoo.text.hashed_ngrams(text) (crc32 of word unigrams, bigrams "
                      "and character 3-grams, modulo 32768) padded with -1; a row of -1 means no text")
    elif spec.text is not None:
        text_input = (f"text_embedding: float32 (N, {spec.text['dim']}), the L2-normalised sentence embedding of "
                      f"the '{spec.text['encoder']}' encoder; an all-zero row means no text")
    facts = {
        "model_name": name,
        "architecture": spec.architecture,
        "strategy": str(info.get("strategy") or ""),
        "label_names": json.dumps(list(spec.label_names)),
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "input_size": json.dumps([3, spec.image_size, spec.image_size]),
        "resize_shorter_side": str(spec.resized_side),
        "crop_pct": str(spec.crop_pct),
        "interpolation": spec.interpolation,
        "text_input": text_input,
        "preprocessing": (f"RGB; resize the shorter side to {spec.resized_side} px ({spec.interpolation}); "
                          f"centre-crop {spec.image_size}x{spec.image_size}; scale to [0, 1]; subtract mean; "
                          "divide by std; float32 NCHW"),
    }
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in facts.items():
        graph.metadata_props.add(key=key, value=value)
    graph.producer_name = "transfer-zoo"
    graph.doc_string = f"{name}: {spec.architecture}, {spec.num_classes} classes (inputs, metadata: zoo.onnx_export)"
    onnx.save(graph, str(path))
