"""Prove the choice: run all four strategies on the same split within one time budget, side by side.

    from transfer.compare import compare
    comparison = compare("path/to/images", budget_seconds=300)
    print(comparison.table())                     # accuracy, macro-F1, seconds, trainable parameters
    comparison.rows[0].name                       # each run is a model in the zoo

Every run gets the same `Dataset` object, so the same train/val/test split. First `transfer.advise`
measures the data (what `auto` would choose, with the reasons); its frozen pass fills the feature
cache, so `feature-extractor` and `shallow` share one backbone pass with it. Then the frozen
strategies run, then `fine-tune` and `from-scratch`.

The budget is shared by the runs' estimated times (`transfer.strategies.estimate_seconds`, scaled by
the speed the advice measured on this machine): in proportion when it covers them all, otherwise the
quick runs get what they need and the costly ones share the rest equally. It is re-split after every
run, so time a quick run leaves over goes to the runs after it. A run that reaches its share stops
early and keeps its best epoch (the row says so).

Each run is saved in the zoo as `<id>-<strategy>`, its transfer.json marked
`"comparison": {"id", "siblings", "budget_seconds", "advised"}`, so the comparison can be rebuilt from
the zoo alone (`load_comparison`). The table and a bar chart (PNG, drawn with Pillow) are also written
to `<zoo>/cache/comparisons/<id>/` (the chart: `transfer.chart`); they are derived, and rebuilt from the siblings when missing.
A cancelled comparison keeps the runs that finished (each a complete model) and saves nothing of
the one that was running.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from transfer import DataError
from transfer.chart import draw_chart
from transfer.data import Dataset, load_dataset
from transfer.progress import Progress, ProgressCallback, Run
from transfer.strategies import STRATEGIES, image_size_for
from zoo import ZooError, zoo_dir
from zoo.catalog import list_entries, resolve_weights
from zoo.files import write_bytes_atomically
from zoo.store import validate_name
from zoo.weights import DEFAULT_BACKBONE

log = logging.getLogger(__name__)

MIN_RUN_SECONDS = 1.0  # the smallest share of the budget a run is given


@dataclass
class ComparisonRow:
    strategy: str
    name: str | None  # the model in the zoo (None: the run failed, see error)
    accuracy: float | None
    macro_f1: float | None
    seconds: float  # wall-clock of the fit
    estimated_seconds: float | None  # what the cost model expected
    budget_seconds: float | None  # this run's share of the budget
    began_after: float = 0.0  # seconds into the comparison (advice included) when this run began
    trainable_parameters: int = 0
    total_parameters: int = 0
    image_size: int = 0
    metrics_split: str = "val"
    stopped_by_budget: bool = False
    error: str | None = None


@dataclass
class Comparison:
    id: str
    dataset: str
    num_train: int
    num_val: int
    num_test: int
    budget_seconds: float | None
    rows: list[ComparisonRow]
    advice: dict[str, Any] | None = None  # what auto chooses for this data (transfer.advise)
    seconds: float = 0.0  # the whole comparison, advice included
    folder: Path | None = None  # comparison.json and chart.png
    chart: Path | None = None

    @property
    def advised(self) -> str | None:
        return self.advice["strategy"] if self.advice else None

    @property
    def best(self) -> ComparisonRow | None:
        """Highest accuracy, then macro-F1, then the quicker run."""
        finished = [row for row in self.rows if row.accuracy is not None]
        return max(finished, key=lambda r: (r.accuracy, r.macro_f1 or 0.0, -r.seconds)) if finished else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder) if self.folder else None
        data["chart"] = str(self.chart) if self.chart else None
        data["best"] = self.best.strategy if self.best else None
        return data

    def table(self) -> str:
        """The comparison as plain text, one row per strategy."""
        split = next((row.metrics_split for row in self.rows if row.name), "val")
        lines = [f"comparison {self.id}: {self.dataset}, the same split for every run "
                 f"({self.num_train} train / {self.num_val} val / {self.num_test} test images; "
                 f"{'test' if split == 'test' else 'validation'} metrics)",
                 f"{'strategy':<18} {'accuracy':>8} {'macro-F1':>8} {'seconds':>8} {'trainable params':>17} "
                 f"{'px':>4}  note"]
        best = self.best
        for row in self.rows:
            notes = []
            if row.strategy == self.advised:
                notes.append("auto's choice")
            if best is not None and row is best:
                notes.append("best")
            if row.stopped_by_budget:
                notes.append("stopped by budget")
            if row.error:
                lines.append(f"{row.strategy:<18} failed: {row.error}")
                continue
            lines.append(f"{row.strategy:<18} {row.accuracy:>8.3f} {row.macro_f1:>8.3f} {row.seconds:>8.1f} "
                         f"{row.trainable_parameters:>17,} {row.image_size:>4}  {', '.join(notes)}")
        if self.advice and self.advice.get("seconds") is not None:
            lines.append(f"(the advice took {self.advice['seconds']:.1f} s; when the data is small its frozen pass "
                         "is the one feature-extractor and shallow reuse, so their seconds leave it out)")
        return "\n".join(lines)


def compare(
    data: str | Path | Dataset,
    *,
    backbone: str = DEFAULT_BACKBONE,
    budget_seconds: float | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    batch_size: int = 32,
    strategies: Sequence[str] = tuple(STRATEGIES),
    name: str | None = None,
    zoo: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
) -> Comparison:
    """Fit `data` under each of `strategies` on one split within `budget_seconds`; see the module docstring.

    name: the comparison's id, and the prefix of its models' names (default: DATA-TIMESTAMP).
    image_size / epochs: passed to every fit (None: each strategy's default).
    device / precision / workers: where every fit runs (see `transfer.fit.fit`).
    """
    from transfer.advise import advise, estimate_fits
    from transfer.fit import fit

    started = time.monotonic()
    order = _run_order(strategies)
    if budget_seconds is not None and budget_seconds <= 0:
        raise DataError("the time budget must be a positive number of seconds")
    run = Run(progress=progress, should_stop=should_stop)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_fraction=val_fraction, seed=seed)
    comparison_id = name or _default_id(dataset)
    names = {strategy: f"{comparison_id}-{strategy}" for strategy in order}
    _check_names_free(names.values(), zoo)

    advice = advise(dataset, backbone=backbone, zoo=zoo, image_size=image_size, epochs=epochs,
                    budget_seconds=budget_seconds, batch_size=batch_size, progress=progress, should_stop=should_stop,
                    device=device)
    weights = resolve_weights(backbone, zoo=zoo)
    frozen_size = image_size_for("feature-extractor", image_size, weights.native_size)
    cached_size = frozen_size if advice.size["size_class"] == "small" else None  # the advice's pass
    marker = {"id": comparison_id, "siblings": list(names.values()), "budget_seconds": budget_seconds,
              "advised": advice.strategy}
    rows = []
    for position, strategy in enumerate(order):
        estimates = estimate_fits(dataset, weights, image_size=image_size, epochs=epochs, cached_size=cached_size,
                                  speed=advice.speed)
        spent = time.monotonic() - started
        share = _share(budget_seconds, spent, strategy, order[position:], estimates)
        run.report(Progress("compare", position, len(order), message=(
            f"{strategy} ({position + 1}/{len(order)})" + (f", {share:.0f} s of the budget" if share else ""))))
        rows.append(_run_one(fit, dataset, strategy, names[strategy], estimates[strategy], share, marker,
                             began_after=round(spent, 1), backbone=backbone, zoo=zoo, image_size=image_size, epochs=epochs, batch_size=batch_size,
                             seed=seed, progress=progress, should_stop=should_stop, device=device,
                             precision=precision, workers=workers))
        row = rows[-1]
        run.report(Progress("compare-row", position + 1, len(order), message=f"{strategy} done", metrics={
            "strategy": strategy, "accuracy": row.accuracy, "macro_f1": row.macro_f1, "seconds": row.seconds,
            "trainable_parameters": row.trainable_parameters, "model": row.name, "error": row.error}))
        if row.name and not STRATEGIES[strategy].trains_backbone:
            cached_size = frozen_size  # every image's frozen features are cached now
    run.report(Progress("compare", len(order), len(order), message="comparison done"))
    if all(row.error for row in rows):
        raise DataError(f"every run failed; the first: {rows[0].error}")

    comparison = Comparison(
        id=comparison_id, dataset=dataset.name, num_train=len(dataset.train), num_val=len(dataset.val),
        num_test=len(dataset.test), budget_seconds=budget_seconds, rows=rows, advice=advice.to_json(),
        seconds=round(time.monotonic() - started, 1),
    )
    save_artifacts(comparison, zoo=zoo)
    return comparison


def _run_one(fit: Callable, dataset: Dataset, strategy: str, name: str, estimate: float, share: float | None,
             marker: dict[str, Any], *, began_after: float, **options: Any) -> ComparisonRow:
    """One fit of the comparison as a table row; a failure of this strategy alone becomes the row's error."""
    begun = time.monotonic()
    try:
        result = fit(dataset, strategy=strategy, name=name, max_seconds=share,
                     extra_info={"comparison": marker}, **options)
    except (DataError, ZooError) as error:
        log.warning("compare: %s failed: %s", strategy, error)
        return ComparisonRow(strategy=strategy, name=None, accuracy=None, macro_f1=None,
                             seconds=round(time.monotonic() - begun, 1), estimated_seconds=estimate,
                             budget_seconds=share, began_after=began_after, error=str(error))
    return ComparisonRow(
        strategy=strategy, name=result.name, accuracy=round(result.metrics["accuracy"], 4),
        macro_f1=round(result.metrics["macro_f1"], 4), seconds=result.train_seconds, estimated_seconds=estimate,
        budget_seconds=share, began_after=began_after, trainable_parameters=result.trainable_parameters,
        total_parameters=result.total_parameters, image_size=result.image_size,
        metrics_split=result.metrics_split, stopped_by_budget=result.stopped_by_budget,
    )


def _run_order(strategies: Sequence[str]) -> list[str]:
    """Frozen strategies first (they share one cached pass), then the trainable ones; no repeats."""
    unknown = [name for name in strategies if name not in STRATEGIES]
    if unknown or not strategies:
        raise DataError(f"unknown strategies {unknown}; compare any of: {', '.join(STRATEGIES)}")
    chosen = set(strategies)
    return [name for name in STRATEGIES if name in chosen]


def _share(budget: float | None, spent: float, strategy: str, remaining: Sequence[str],
           estimates: dict[str, float]) -> float | None:
    """This run's seconds of what is left of the budget. When it covers every remaining run's
    estimate, the spare time is shared in proportion to the estimates; when it does not, the quick
    runs still get what they need and the costly ones share the rest equally (max-min fair)."""
    if budget is None:
        return None
    left = max(0.0, budget - spent)
    needs = [estimates[name] for name in remaining]
    if sum(needs) <= left:
        share = left * estimates[strategy] / sum(needs)
    else:
        share = min(estimates[strategy], _fair_level(needs, left))
    return round(max(MIN_RUN_SECONDS, share), 1)


def _fair_level(needs: Sequence[float], total: float) -> float:
    """The level L with sum(min(need, L)) == total (water-filling), for total < sum(needs)."""
    left = total
    for position, need in enumerate(sorted(needs)):
        fair = left / (len(needs) - position)
        if need > fair:
            return fair
        left -= need
    return max(needs)


def _default_id(dataset: Dataset) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset.name).strip("-._") or "data"
    return f"{stem[:32]}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _check_names_free(names: Sequence[str], zoo) -> None:
    """Refuse before any training when a run's name is invalid or taken (a comparison never overwrites)."""
    root = zoo_dir(zoo)
    for name in names:
        validate_name(name)
        if (root / name).exists():
            raise ZooError(f"A model named '{name}' already exists in {root}; choose another comparison name.")


# --- the comparison on disk ------------------------------------------------------------------------------


def comparison_folder(comparison_id: str, *, zoo: str | Path | None = None) -> Path:
    return zoo_dir(zoo) / "cache" / "comparisons" / validate_name(comparison_id)


def save_artifacts(comparison: Comparison, *, zoo: str | Path | None = None) -> None:
    """Write comparison.json and chart.png (each atomically) and record where they are."""
    folder = comparison_folder(comparison.id, zoo=zoo)
    folder.mkdir(parents=True, exist_ok=True)
    comparison.folder, comparison.chart = folder, folder / "chart.png"
    write_bytes_atomically(folder / "comparison.json", json.dumps(comparison.to_json(), indent=2).encode())
    write_bytes_atomically(comparison.chart, draw_chart(comparison))


def load_comparison(comparison_id: str, *, zoo: str | Path | None = None) -> Comparison:
    """A comparison rebuilt from its sibling models in the zoo (the table and chart are redrawn if missing)."""
    siblings = [entry for entry in list_entries(zoo=zoo)
                if not entry.damaged and (entry.info.get("comparison") or {}).get("id") == comparison_id]
    if not siblings:
        raise ZooError(f"No comparison '{comparison_id}' in {zoo_dir(zoo)}: none of its models is there.")
    marker = siblings[0].info["comparison"]
    rows = [_row_from_info(entry.name, entry.info) for entry in siblings]
    rows.sort(key=lambda row: list(STRATEGIES).index(row.strategy) if row.strategy in STRATEGIES else len(STRATEGIES))
    folder = comparison_folder(comparison_id, zoo=zoo)
    saved = _read_json(folder / "comparison.json")
    data = siblings[0].info.get("data") or {}
    comparison = Comparison(
        id=comparison_id, dataset=data.get("name", ""), num_train=data.get("num_train", 0),
        num_val=data.get("num_val", 0), num_test=data.get("num_test", 0),
        budget_seconds=marker.get("budget_seconds"), rows=rows, advice=saved.get("advice"),
        seconds=saved.get("seconds", 0.0),
    )
    if comparison.advice is None and marker.get("advised"):
        comparison.advice = {"strategy": marker["advised"]}
    if (folder / "chart.png").is_file() and saved:
        comparison.folder, comparison.chart = folder, folder / "chart.png"
    else:
        save_artifacts(comparison, zoo=zoo)
    return comparison


def _row_from_info(name: str, info: dict[str, Any]) -> ComparisonRow:
    metrics = info.get("metrics") or {}
    parameters = info.get("parameters") or {}
    settings = info.get("settings") or {}
    return ComparisonRow(
        strategy=info.get("strategy", "?"), name=name, accuracy=metrics.get("accuracy"),
        macro_f1=metrics.get("macro_f1"), seconds=info.get("train_seconds", 0.0), estimated_seconds=None,
        budget_seconds=settings.get("max_seconds"), trainable_parameters=parameters.get("trainable", 0),
        total_parameters=parameters.get("total", 0), image_size=settings.get("image_size", 0),
        metrics_split=info.get("metrics_split", "val"), stopped_by_budget=bool(info.get("stopped_by_budget")),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
