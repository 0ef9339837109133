"""A zoo model loaded once and kept: `ModelCache`, keyed by the model's name AND its content.

The key is the bytes of transfer.json and a digest of model.safetensors (memoised per file version),
and every request re-reads the entry, so a replaced, re-imported or deleted model is never served
stale. A model deleted or replaced WHILE a request loads or uses it: a load retries on the new
version (never old labels with new weights), and `still_current` lets a request check, before it
answers, that the model it used is still the one under that name. Models are kept in eval mode,
channels-last, with BatchNorm folded into the convolutions, on the cache's device.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo import ZooError, zoo_dir
from zoo.catalog import load_model, read_entry
from zoo.files import file_digest
from zoo.model import ModelSpec, fused_for_inference
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


def _current_identity(name: str, zoo: str | Path | None) -> tuple:
    """The identity of what the zoo holds under `name` now; `ZooError` when it was deleted."""
    try:
        return _identity(read_entry(name, zoo=zoo))
    except ZooError:
        raise ZooError(f"Model '{name}' was deleted while this request used it; nothing was predicted. "
                       "Pick another model.") from None


def still_current(loaded: LoadedModel) -> None:
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
