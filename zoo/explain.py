"""Grad-CAM for zoo models: which part of an image made the model choose a class.

    from zoo.predict import explain                 # the same function as zoo.explain.explain
    shown = explain("my-model", "photo.jpg")        # the top class; target="cat" for another one
    shown.heatmap     # (H, W) float32 in [0, 1] over the centre crop the model sees (H = W = input size)
    shown.overlay     # that crop as a PIL image with the heatmap blended in (red: looked at most)
    shown.label, shown.score, shown.crop_box        # the class explained, its probability, where the crop is

The maps come from pytorch-grad-cam (`grad-cam` on PyPI). Its target layer is read from the model's
spec, never hard-coded per backbone: the output of the last backbone stage the model keeps, i.e.
timm's `feature_info[cut_stage]` for a cut (shallow) model and the last entry of `feature_info`
otherwise; for an image+text model the same stage of its image branch (the text, when given, takes
part in the decision being explained). So every strategy and every timm backbone is covered.

A cached model is shared by every request of the app; Grad-CAM hooks its target layer, so it runs on
a copy of the module tree that shares the weights (no tensor is copied, no weight gets a gradient),
and predictions running meanwhile are never disturbed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zoo import ZooError
from zoo.images import ImageSource, open_image
from zoo.model import ModelSpec, center_crop_uint8, normalize
from zoo.loaded import LoadedModel, ModelCache


@dataclass
class Explanation:
    heatmap: np.ndarray  # (H, W) float32 in [0, 1]: where the evidence for `label` lies
    overlay: Image.Image  # the centre crop the model saw, with the heatmap blended in
    label: str  # the class explained
    score: float  # its probability for this image
    top_label: str  # the model's own answer, and its probability
    top_score: float
    crop_box: tuple[float, float, float, float]  # the crop as (left, top, right, bottom) fractions of the image
    layer: str  # the module whose activations were weighed


def target_layer(model: torch.nn.Module, spec: ModelSpec) -> str:
    """The name of the module Grad-CAM watches: the last backbone stage the spec keeps."""
    image_model = model.image if spec.text is not None else model
    stages = getattr(image_model, "feature_info", None)
    if not stages:
        raise ZooError(f"{spec.architecture} does not describe its stages (timm feature_info); "
                       "Grad-CAM cannot choose a layer for it.")
    stage = stages[len(stages) - 1 if spec.cut_stage is None else spec.cut_stage]
    name = stage["module"] if isinstance(stage, dict) else stage.module
    return f"image.{name}" if spec.text is not None else name


def explain(
    model: str | LoadedModel,
    image: ImageSource,
    target: str | int | None = None,
    *,
    text: str | None = None,
    zoo: str | Path | None = None,
    cache: ModelCache | None = None,
) -> Explanation:
    """Grad-CAM of `image` for class `target` (a label, or its index; None: the model's top class).

    text: for image+text models, the sentence beside the image (None: the image alone)."""
    loaded = model if isinstance(model, LoadedModel) else (cache or ModelCache(1)).get(model, zoo=zoo)
    [shown] = explain_images(loaded, [image], [target], texts=[text])
    return shown


def explain_images(
    loaded: LoadedModel,
    images: Sequence[ImageSource],
    targets: Sequence[str | int | None] | None = None,
    *,
    texts: Sequence[str | None] | None = None,
) -> list[Explanation]:
    """Grad-CAM for several images at once (one forward and backward pass), one target each."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    spec = loaded.spec
    if not images:
        return []
    targets = list(targets) if targets is not None else [None] * len(images)
    if len(targets) != len(images):
        raise ZooError(f"Got {len(images)} images but {len(targets)} targets; give one target per image.")
    texts = list(texts) if texts is not None else [None] * len(images)
    if any(texts) and spec.text is None:
        raise ZooError(f"Model '{loaded.name}' takes images only; leave the text out.")
    if len(texts) != len(images):
        raise ZooError(f"Got {len(images)} images but {len(texts)} texts; give one text per image.")
    wanted = [None if target is None else class_index(spec, target) for target in targets]
    pictures = [open_image(image, shorter_side=spec.resized_side) for image in images]
    crops = torch.stack([center_crop_uint8(picture, spec) for picture in pictures])
    batch = normalize(crops.to(loaded.device), spec)  # on the model's device; the overlays use the CPU crops
    network = _ImageBranch(_hooks_of_its_own(loaded.model), spec, texts).eval()
    layer = target_layer(loaded.model, spec)
    watched = [network.model.get_submodule(layer)]
    with torch.enable_grad(), GradCAM(model=network, target_layers=watched) as cam:
        cam.compute_input_gradient = True  # the weights need none: through the input the activations get theirs
        try:
            heatmaps = cam(input_tensor=batch, targets=[_TopClass() if index is None else ClassifierOutputTarget(index)
                                                        for index in wanted])
        except ValueError as error:  # grad-cam's own check: the layer's output is not an image-shaped map
            raise ZooError(f"Grad-CAM cannot read the output of {spec.architecture}'s stage '{layer}' as a map "
                           f"over the image ({error}); it works for convolutional backbones.") from None
        logits = cam.outputs.detach().float().cpu()
    chosen = [int(logits[row].argmax()) if index is None else index for row, index in enumerate(wanted)]
    probabilities = logits.softmax(dim=1)
    shown = []
    for row, (picture, index) in enumerate(zip(pictures, chosen)):
        top = int(probabilities[row].argmax())
        heatmap = np.nan_to_num(heatmaps[row].astype(np.float32)).clip(0, 1)
        shown.append(Explanation(
            heatmap=heatmap, overlay=overlay(crops[row], heatmap), label=spec.label_names[index],
            score=round(float(probabilities[row, index]), 6), top_label=spec.label_names[top],
            top_score=round(float(probabilities[row, top]), 6), crop_box=crop_box(picture, spec), layer=layer,
        ))
    return shown


def class_index(spec: ModelSpec, target: str | int) -> int:
    """A class given by label (or by index) -> its index; `ZooError` naming a few labels otherwise."""
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if 0 <= int(target) < spec.num_classes:
            return int(target)
    elif str(target) in spec.label_names:
        return spec.label_names.index(str(target))
    else:  # "Espresso" for "espresso"
        folded = [label.casefold() for label in spec.label_names]
        if str(target).strip().casefold() in folded:
            return folded.index(str(target).strip().casefold())
    known = "; ".join(spec.label_names[:5]) + (f"; … ({spec.num_classes} in all)" if spec.num_classes > 5 else "")
    raise ZooError(f"'{target}' is not one of the model's classes ({known}).")


def overlay(crop: torch.Tensor, heatmap: np.ndarray, image_weight: float = 0.55) -> Image.Image:
    """The uint8 CHW crop with the heatmap (jet colours) blended in, as an RGB image."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = crop.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    return Image.fromarray(show_cam_on_image(rgb, heatmap, use_rgb=True, image_weight=image_weight))


def crop_box(picture: Image.Image, spec: ModelSpec) -> tuple[float, float, float, float]:
    """Where the centre crop lies in the (aspect-preserving) resized image, as fractions of its sides."""
    width, height = picture.size
    side = spec.image_size
    left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))  # as center_crop_uint8
    return left / width, top / height, (left + side) / width, (top + side) / height


def _hooks_of_its_own(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the module tree sharing the model's weights (as tensors needing no gradient): Grad-CAM's
    hooks go on the copy, so predictions running meanwhile on the shared model never trigger them."""
    memo: dict[int, object] = {id(p): torch.nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()}
    memo.update({id(buffer): buffer for buffer in model.buffers()})
    return copy.deepcopy(model, memo)


class _TopClass:
    """pytorch-grad-cam target: the score of the class the model ranks first for the image."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output.max(dim=-1).values


class _ImageBranch(torch.nn.Module):
    """images -> logits, as pytorch-grad-cam calls a model; an image+text model gets its texts here."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, texts: list[str | None]):
        super().__init__()
        self.model = model
        self.text = None
        if spec.text is not None:
            from zoo.text import prepare_texts

            self.text = prepare_texts(spec.text["encoder"], texts)  # one per image

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images) if self.text is None else self.model(images, self.text)
