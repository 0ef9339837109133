"""The Fine-tune and Compare tabs' settings, read from their widgets and checked once, here.

Numbers come from `gr.Number` widgets, where 0 or empty means "the default"; ranges are the
packages' own (the image size's is `transfer.strategies.IMAGE_SIZE_RANGE`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from transfer.strategies import IMAGE_SIZE_RANGE, STRATEGIES
from zoo import ZooError
from zoo.catalog import read_entry
from zoo.store import validate_name
from zoo.weights import DEFAULT_BACKBONE, default_cfg

AUTO = "auto"  # transfer.advise measures the data and picks one of STRATEGIES
EPOCHS_RANGE = (1, 500)
BATCH_SIZE_RANGE = (2, 512)


def strategy_choices() -> list[str]:
    return [AUTO, *STRATEGIES]


def describe_strategy(strategy: str) -> str:
    if strategy == AUTO:
        return ("**auto**: measure how much data there is and how much it looks like the backbone's "
                "pretraining photos, then pick one of the four (the advice appears once a dataset is loaded).")
    plan = STRATEGIES.get(strategy)
    return f"**{plan.name}**: {plan.when}." if plan else ""


def whole_number(value: float | None, label: str, limits: tuple[int, int]) -> int | None:
    """A whole number within `limits`, None for 0 or empty (the default), else `gr.Error`."""
    low, high = limits
    if value is None or value == "" or value == 0:
        return None
    if float(value) != int(value) or not low <= int(value) <= high:
        raise gr.Error(f"{label} must be a whole number from {low} to {high} (or 0 for the default).")
    return int(value)


def image_size_setting(value) -> int | None:
    return whole_number(value, "Image size", IMAGE_SIZE_RANGE)


def epochs_setting(value) -> int | None:
    return whole_number(value, "Epochs", EPOCHS_RANGE)


def budget_setting(max_seconds) -> float | None:
    """The time budget widget as seconds (0 or empty: none)."""
    if max_seconds in (None, "", 0):
        return None
    if float(max_seconds) <= 0:
        raise gr.Error("The time budget must be a positive number of seconds (or 0 for none).")
    return float(max_seconds)


def backbone_setting(backbone: str | None) -> str:
    return (backbone or "").strip() or DEFAULT_BACKBONE


def model_name_setting(name: str | None) -> str | None:
    name = (name or "").strip() or None
    return validate_name(name) if name is not None else None


def balance_setting(balance: str | None) -> str:
    from transfer.balance import BALANCE_CHOICES

    balance = balance or "auto"
    if balance not in BALANCE_CHOICES:
        raise gr.Error(f"Choose how to balance the classes: {', '.join(BALANCE_CHOICES)}.")
    return balance


def backbone_facts(backbone: str) -> tuple[str, int]:
    """(timm architecture, native input size) a backbone name stands for, without loading weights
    (for time estimates). A zoo model's own input size is its native one."""
    if backbone.startswith("zoo:"):
        try:
            spec = read_entry(backbone.removeprefix("zoo:")).spec
            return spec.architecture, spec.image_size
        except ZooError:
            return backbone, 224
    architecture = backbone.partition("@")[0].removeprefix("hf-hub:")
    return architecture, int(default_cfg(architecture).get("input_size", (3, 224, 224))[-1])


@dataclass(frozen=True)
class FitSettings:
    """The Fine-tune tab's settings, checked, as `transfer.fit` keyword arguments."""

    backbone: str
    strategy: str
    name: str | None
    image_size: int | None
    epochs: int | None
    batch_size: int
    max_seconds: float | None

    @classmethod
    def from_widgets(cls, backbone, strategy, name, image_size, epochs, batch_size, max_seconds) -> "FitSettings":
        if strategy not in strategy_choices():
            raise gr.Error(f"Choose a strategy: {', '.join(strategy_choices())}.")
        return cls(
            backbone=backbone_setting(backbone), strategy=strategy, name=model_name_setting(name),
            image_size=image_size_setting(image_size), epochs=epochs_setting(epochs),
            batch_size=whole_number(batch_size, "Batch size", BATCH_SIZE_RANGE) or 32,
            max_seconds=budget_setting(max_seconds),
        )
