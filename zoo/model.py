"""The classifier, built from a plain spec.

A `ModelSpec` describes itself completely (architecture, where it is cut, its classes, the input it
expects), so a saved model is rebuilt from its spec alone, with no reference to how it was trained:

    spec = ModelSpec.from_dict(json.load(open("transfer.json"))["spec"])
    model = build_model(spec)                       # random weights, right shapes
    model.load_state_dict(safetensors.torch.load_file("model.safetensors"))

Image-only models are plain timm models (cut ones are pruned with timm's own
`prune_intermediate_layers`), so the uncut ones also load with `timm.create_model("local-dir:...")`.

Image+text models (`spec.text` set) are `ImageTextClassifier`s: late fusion of the backbone's pooled
image features and a sentence's features, each projected to `fusion_dim`, concatenated and
classified by a small MLP. Either input may be missing (a learned "absent" vector stands in), which
training rehearses with modality dropout, so such a model still answers from the image alone or
the text alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from zoo.spec import ModelSpec  # noqa: F401  (re-exported: the spec and the model go together)
from zoo.weights import Weights, create_backbone, random_weights


def build_model(spec: ModelSpec, weights: Weights | None = None) -> torch.nn.Module:
    """The classifier for `spec`: pretrained from `weights` with a new head, or random (weights=None)."""
    weights = weights or random_weights(spec.architecture)
    num_classes = 0 if spec.text is not None else spec.num_classes  # 0: the backbone returns features
    model = create_backbone(weights, num_classes=num_classes, cut_stage=spec.cut_stage)
    model.pretrained_cfg = {**model.pretrained_cfg, **spec.data_config(), "num_classes": num_classes}
    if spec.text is None:
        return model
    return ImageTextClassifier(model, image_dim=model.num_features, num_classes=spec.num_classes, **spec.text)


def text_settings(encoder: str, *, fusion_dim: int = 128, hidden_dim: int = 256) -> dict[str, Any]:
    """The `spec.text` of an image+text model using `encoder`."""
    from zoo.text import text_dim

    return {"encoder": encoder, "dim": text_dim(encoder), "fusion_dim": fusion_dim, "hidden_dim": hidden_dim}


class ImageTextClassifier(torch.nn.Module):
    """Late fusion: [project(image features) ; project(text features)] -> MLP -> class logits."""

    def __init__(self, image_model: torch.nn.Module, *, image_dim: int, num_classes: int, encoder: str,
                 dim: int, fusion_dim: int = 128, hidden_dim: int = 256, dropout: float = 0.2):
        from zoo.text import HashingEncoder

        super().__init__()
        self.image = image_model  # a timm backbone without classifier: images -> pooled features
        self.text = HashingEncoder(dim=dim) if encoder == "hashing" else None  # frozen encoders run outside
        self.image_proj = torch.nn.Sequential(torch.nn.LayerNorm(image_dim), torch.nn.Linear(image_dim, fusion_dim),
                                              torch.nn.GELU())
        self.text_proj = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, fusion_dim),
                                             torch.nn.GELU())
        self.absent_image = torch.nn.Parameter(torch.zeros(fusion_dim))
        self.absent_text = torch.nn.Parameter(torch.zeros(fusion_dim))
        self.head = torch.nn.Sequential(
            torch.nn.Dropout(dropout), torch.nn.Linear(2 * fusion_dim, hidden_dim), torch.nn.GELU(),
            torch.nn.Dropout(dropout), torch.nn.Linear(hidden_dim, num_classes),
        )
        self.num_classes = num_classes

    def encode_text(self, text) -> torch.Tensor:
        """`zoo.text.TextInputs` -> (N, dim) text features."""
        return self.text(text) if self.text is not None else text.features

    def fuse(self, image_features: torch.Tensor | None, text_features: torch.Tensor | None,
             image_present: torch.Tensor, text_present: torch.Tensor) -> torch.Tensor:
        """Logits from features; rows whose modality is absent use the learned absent vector."""
        batch = len(image_present)
        image = self.absent_image.expand(batch, -1)
        if image_features is not None:
            image = torch.where(image_present[:, None], self.image_proj(image_features), image)
        text = self.absent_text.expand(batch, -1)
        if text_features is not None:
            text = torch.where(text_present[:, None], self.text_proj(text_features), text)
        return self.head(torch.cat([image, text], dim=1))

    def forward(self, images: torch.Tensor | None, text=None, image_present: torch.Tensor | None = None) -> torch.Tensor:
        """images: normalised (N, 3, H, W) or None; text: `zoo.text.TextInputs` or None;
        image_present: (N,) bool, to treat some images as absent (modality dropout)."""
        batch = len(images) if images is not None else len(text)
        device = self.absent_image.device
        text = text.to(device) if text is not None else None
        image_features = self.image(images) if images is not None else None
        if image_present is None:
            image_present = torch.full((batch,), images is not None, dtype=torch.bool, device=device)
        text_features = self.encode_text(text) if text is not None else None
        text_present = text.present if text is not None else torch.zeros(batch, dtype=torch.bool, device=device)
        return self.fuse(image_features, text_features, image_present, text_present)


# --- input: the same pixels for training and prediction ------------------------------------------


def center_crop_uint8(image: Image.Image, spec: ModelSpec) -> torch.Tensor:
    """An RGB image already resized to `spec.resized_side` -> centre crop as uint8 CHW."""
    width, height = image.size
    side = spec.image_size
    left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))  # as torchvision
    crop = image.crop((left, top, left + side, top + side))
    return torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1)


def normalize(batch_uint8: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """uint8 NCHW -> float input, exactly as torchvision's ToTensor + Normalize compute it (on the
    batch's own device: move the uint8 batch first, it is a quarter of the bytes)."""
    mean = torch.tensor(spec.mean, device=batch_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=batch_uint8.device).view(1, 3, 1, 1)
    return batch_uint8.float().div(255).sub(mean).div(std).contiguous(memory_format=torch.channels_last)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# --- inference speed ------------------------------------------------------------------------------------


def batchnorm_pairs(model: torch.nn.Module) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) module names for every norm that directly follows a convolution.

    timm blocks declare each norm right after the convolution it follows (conv_pw, bn1, conv_dw,
    bn2, ...), with at most an empty (Identity) slot between; the pairing is read from that order,
    so `fused_for_inference` checks its result numerically rather than trusting it."""
    from timm.layers import BatchNormAct2d

    pairs = []
    for parent_name, parent in model.named_modules():
        prefix = f"{parent_name}." if parent_name else ""
        previous = None
        for child_name, child in parent.named_children():
            if isinstance(child, torch.nn.Conv2d):
                previous = child
                previous_name = child_name
                continue
            if isinstance(child, torch.nn.Identity):
                continue
            if (type(child) in (torch.nn.BatchNorm2d, BatchNormAct2d) and previous is not None
                    and previous.out_channels == child.num_features and child.running_var is not None):
                pairs.append((prefix + previous_name, prefix + child_name))
            previous = None
    return pairs


def fused_for_inference(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """A copy of `model` for inference only, with each BatchNorm folded into the convolution before it.

    An eval-mode BatchNorm is a per-channel affine map, so it folds exactly into the preceding
    convolution's weights and bias; on a CPU that removes about a fifth of an EfficientNet's
    forward time. The copy is checked against the original on `example` (hooks silenced): if any
    output differs (an architecture built otherwise), the unfused model is returned. A norm with
    hooks of its own is left in place; a folded convolution keeps `folded_norm = (scale, shift)`,
    so that hooks watching its output can recover the norm's input, (output - shift) / scale
    (as `transfer.advise` does). The original is never modified.
    """
    import copy

    from timm.layers import BatchNormAct2d
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    def has_hooks(module: torch.nn.Module) -> bool:
        return bool(module._forward_hooks or module._forward_pre_hooks)

    pairs = [(conv, norm) for conv, norm in batchnorm_pairs(model) if not has_hooks(model.get_submodule(norm))]
    if not pairs:
        return model
    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        for conv_name, norm_name in pairs:
            conv, norm = fused.get_submodule(conv_name), fused.get_submodule(norm_name)
            scale = (norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)) \
                / torch.sqrt(norm.running_var + norm.eps)
            shift = (norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)) \
                - norm.running_mean * scale
            conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean,
                                                          norm.running_var, norm.eps, norm.weight, norm.bias)
            conv.folded_norm = (scale.clone(), shift.clone())
            after = (torch.nn.Sequential(norm.drop, norm.act) if isinstance(norm, BatchNormAct2d)
                     else torch.nn.Identity())
            parent_name, _, attribute = norm_name.rpartition(".")
            setattr(fused.get_submodule(parent_name) if parent_name else fused, attribute, after)
    with _hooks_silenced(model, fused), torch.inference_mode():
        expected, got = model.eval()(example), fused(example)
    expected = expected if isinstance(expected, (tuple, list)) else [expected]
    got = got if isinstance(got, (tuple, list)) else [got]
    if all(torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max()) + 1e-5) for a, b in zip(expected, got)):
        return fused
    return model


class _hooks_silenced:
    """Within: no forward hooks run on the given models (a check must not feed what they record)."""

    def __init__(self, *models: torch.nn.Module):
        self.modules = [module for model in models for module in model.modules()]

    def __enter__(self) -> None:
        import collections

        self.saved = [(m._forward_hooks, m._forward_pre_hooks) for m in self.modules]
        for module in self.modules:
            module._forward_hooks, module._forward_pre_hooks = collections.OrderedDict(), collections.OrderedDict()

    def __exit__(self, *exc_info) -> None:
        for module, (hooks, pre_hooks) in zip(self.modules, self.saved):
            module._forward_hooks, module._forward_pre_hooks = hooks, pre_hooks
