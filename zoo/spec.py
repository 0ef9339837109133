"""A model's plain description: architecture, cut, classes, input settings, text settings.

Kept apart from `zoo.model` (which needs torch) so that listing a zoo validates every model's spec
without loading PyTorch; `zoo.model` re-exports `ModelSpec`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from zoo import ZooError
from zoo.images import resized_side

if TYPE_CHECKING:
    from zoo.weights import Weights


@dataclass
class ModelSpec:
    architecture: str  # timm architecture, e.g. "tf_efficientnet_lite0"
    label_names: list[str]  # class index -> name; its length is the number of classes
    cut_stage: int | None = None  # keep backbone stages 0..cut_stage (timm feature_info index); None: all
    image_size: int = 224  # square input side in pixels
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # input normalisation the weights expect
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875  # resize the shorter side to image_size / crop_pct, then centre-crop
    interpolation: str = "bicubic"
    text: dict[str, Any] | None = None  # image+text models: {"encoder", "dim", "fusion_dim", "hidden_dim"}; None: image only

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def resized_side(self) -> int:
        return resized_side(self.image_size, self.crop_pct)

    def data_config(self) -> dict[str, Any]:
        """timm's data config: what `timm.data.create_transform` and `pretrained_cfg` take."""
        return {
            "input_size": (3, self.image_size, self.image_size),
            "interpolation": self.interpolation,
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict):
            raise ZooError("model spec must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ZooError(f"model spec has unknown fields {sorted(unknown)}; is the zoo newer than this code?")
        try:
            spec = cls(**data)
            spec.mean, spec.std = tuple(map(float, spec.mean)), tuple(map(float, spec.std))
            spec.label_names = [str(name) for name in spec.label_names]
        except (TypeError, ValueError) as error:
            raise ZooError(f"invalid model spec: {error}") from None
        if spec.num_classes < 1 or int(spec.image_size) < 8:
            raise ZooError("invalid model spec: needs at least one class and an image size of 8 px or more")
        return spec

    @classmethod
    def for_weights(cls, weights: Weights, label_names: list[str], **overrides: Any) -> "ModelSpec":
        """A spec whose input settings (mean, std, crop) follow what the weights were trained with."""
        cfg = weights.pretrained_cfg
        values: dict[str, Any] = {}
        for key in ("mean", "std", "crop_pct", "interpolation"):
            if cfg.get(key) is not None:
                values[key] = tuple(cfg[key]) if key in ("mean", "std") else cfg[key]
        if cfg.get("input_size"):
            values["image_size"] = int(cfg["input_size"][-1])
        values["cut_stage"] = weights.cut_stage
        values.update(overrides)
        return cls(architecture=weights.architecture, label_names=list(label_names), **values)
