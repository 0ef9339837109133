"""What a fit would do, without training: `python -m transfer fit --dry-run`.

    plan = plan_fit("digits/", strategy="fine-tune", image_size=64)
    print(plan.text())   # strategy, epochs, image size, images, estimated seconds, device

For a named strategy the estimate is the cost model's (`transfer.strategies.estimate_seconds`);
for auto, `transfer.advise` measures the data first (one frozen pass, no training, its features
cached for the fit) and the plan is its predicted choice with its estimate, which allows for this
machine's measured speed (the fit itself tries the frozen strategies first and decides on their
measured scores, `transfer.auto`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transfer import DataError
from transfer.data import Dataset, load_dataset
from transfer.progress import ProgressCallback
from transfer.strategies import HEAD_EPOCHS, estimate_seconds, get_strategy, image_size_for
from zoo import ZooError
from zoo.devices import resolve_device
from zoo.weights import DEFAULT_BACKBONE


@dataclass
class FitPlan:
    strategy: str
    backbone: str
    epochs: int  # passes over the images (frozen strategies: the most the head may train on cached features)
    image_size: int
    num_train: int
    num_val: int
    num_test: int
    estimated_seconds: float
    device: str  # where the fit would run, e.g. "cpu" or "cuda:0"
    reasons: list[str] | None = None  # auto: why it chose this strategy

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        epochs = (str(self.epochs) if get_strategy(self.strategy).trains_backbone
                  else f"up to {self.epochs} (a head on cached features; stops early)")
        lines = [
            f"strategy   {self.strategy}" + (" (auto: " + " ".join(self.reasons) + ")" if self.reasons else ""),
            f"backbone   {self.backbone} at {self.image_size} px",
            f"epochs     {epochs}",
            f"images     {self.num_train} train / {self.num_val} val / {self.num_test} test",
            f"estimate   about {self.estimated_seconds:.0f} s",
            f"device     {self.device}",
            "nothing was trained (--dry-run)",
        ]
        return "\n".join(lines)


def plan_fit(
    data: str | Path | Dataset,
    *,
    backbone: str = DEFAULT_BACKBONE,
    strategy: str = "auto",
    epochs: int | None = None,
    image_size: int | None = None,
    batch_size: int = 32,
    max_seconds: float | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    zoo: str | Path | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "auto",
) -> FitPlan:
    """The plan `transfer.fit.fit` would follow with these arguments; nothing is trained or saved.

    device: as fit's ("auto": CUDA, then MPS, else the CPU); the plan names the one it resolves to.
    The estimates are the cost model's, made for a 2-core CPU (auto's allow for the measured speed)."""
    from transfer.fit import weights_for  # fit imports the training code: only when planning

    plan = None if strategy == "auto" else get_strategy(strategy)
    try:
        where = str(resolve_device(device))
    except ZooError as error:
        raise DataError(str(error)) from None
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_fraction=val_fraction, seed=seed)
    reasons = None
    if plan is None:
        from transfer.advise import advise

        advice = advise(dataset, backbone=backbone, zoo=zoo, image_size=image_size, epochs=epochs,
                        budget_seconds=max_seconds, batch_size=batch_size, progress=progress, should_stop=should_stop,
                        device=device)
        plan, reasons = get_strategy(advice.strategy), advice.reasons
        seconds = advice.estimated_seconds[plan.name]
    weights = weights_for(plan, backbone, zoo)
    size = image_size_for(plan, image_size, weights.native_size, dataset.median_side)
    if reasons is None:
        seconds = estimate_seconds(plan.name, num_train=len(dataset.train),
                                   num_eval=len(dataset.val) + len(dataset.test), image_size=size, epochs=epochs,
                                   architecture=weights.architecture, native_size=weights.native_size,
                                   median_side=dataset.median_side)
    return FitPlan(
        strategy=plan.name, backbone=backbone, epochs=epochs or (plan.epochs if plan.trains_backbone else HEAD_EPOCHS),
        image_size=size, num_train=len(dataset.train), num_val=len(dataset.val), num_test=len(dataset.test),
        estimated_seconds=round(float(seconds), 1), device=where, reasons=reasons,
    )
