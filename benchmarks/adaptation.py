"""Domain adaptation and class balance, measured: what `--target-domain` and `--balance` change.

    python benchmarks/adaptation.py [--strategies feature-extractor shallow fine-tune from-scratch]
                                    [--seeds 0 1 2] [--output benchmarks/results/adaptation.json]

Adaptation: the source is scikit-learn's digits; the target is the same digits seen through
another camera (random ink and paper colours, blur, noise; tests/fixtures/digit_sets.py). Each
strategy fits the source twice per seed, without and with the 450 unlabelled target images, and
both models are scored on 447 labelled target images they never saw and on the source's
validation images. `--adaptation on` throughout, so from-scratch shows what adversarial training
does to a random start (under `auto` it is not adapted, for that reason). Frozen strategies run at
64 px, trainable ones at 32 px for 10 epochs (as the test does). Balance: digits 0-4 with 100
training images each, 5-9 with 5 (20:1), scored on a balanced held-out test split, with
`--balance none`, `weights` and `resample` (what `auto` picks at 20:1).

Prints two tables and writes JSON. Seconds depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from fixtures.digit_sets import accuracy_on, make_domains, make_lopsided  # noqa: E402
from run import machine  # noqa: E402
from transfer.fit import fit  # noqa: E402

SETTINGS = {"feature-extractor": dict(image_size=64), "shallow": dict(image_size=64),
            "fine-tune": dict(image_size=32, epochs=10), "from-scratch": dict(image_size=32, epochs=10)}


def adaptation_rows(data: Path, strategies: list[str], seeds: list[int], zoo: Path) -> list[dict]:
    rows = []
    for strategy in strategies:
        for seed in seeds:
            row = {"strategy": strategy, "seed": seed}
            for adapted in (False, True):
                started = time.perf_counter()
                result = fit(data / "source", strategy=strategy, zoo=zoo, workers=0, seed=seed, overwrite=True,
                             name=f"{strategy}-{seed}-{'adapted' if adapted else 'plain'}",
                             target_domain=data / "target" if adapted else None, adaptation="on",
                             **SETTINGS[strategy])
                key = "adapted" if adapted else "plain"
                row[f"source_{key}"] = result.metrics["accuracy"]
                row[f"target_{key}"] = accuracy_on(result, data / "target-test")
                row[f"seconds_{key}"] = time.perf_counter() - started
                if adapted:
                    row["method"], row["shift"] = result.adaptation["method"], result.adaptation["shift"]
            print(f"  {strategy} seed {seed}: target {row['target_plain']:.3f} -> {row['target_adapted']:.3f}, "
                  f"source {row['source_plain']:.3f} -> {row['source_adapted']:.3f}", flush=True)
            rows.append(row)
    return rows


def balance_rows(data: Path, zoo: Path) -> list[dict]:
    rows = []
    for balance in ("none", "weights", "resample"):
        result = fit(data, strategy="feature-extractor", image_size=64, zoo=zoo, workers=0, balance=balance,
                     name=f"lopsided-{balance}", overwrite=True)
        minority = [str(digit) for digit in range(5, 10)]
        rows.append({"balance": balance, "accuracy": result.metrics["accuracy"],
                     "macro_f1": result.metrics["macro_f1"],
                     "minority_recall": statistics.mean(result.metrics["per_class"][label]["recall"]
                                                        for label in minority)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "adaptation.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        adaptation = adaptation_rows(make_domains(scratch / "domains"), args.strategies, args.seeds, scratch / "zoo")
        balance = balance_rows(make_lopsided(scratch / "lopsided"), scratch / "zoo")
    print("\nstrategy           method      shift  seeds  source plain -> adapted   target plain -> adapted   "
          "target gain (min..max)")
    for strategy in args.strategies:
        rows = [row for row in adaptation if row["strategy"] == strategy]
        mean = {key: statistics.mean(row[key] for row in rows)
                for key in ("source_plain", "source_adapted", "target_plain", "target_adapted", "shift")}
        gains = [row["target_adapted"] - row["target_plain"] for row in rows]
        print(f"{strategy:<18} {rows[0]['method'] or '-':<11} {mean['shift']:.3f}  {len(rows):>5}  "
              f"{mean['source_plain']:.3f} -> {mean['source_adapted']:.3f}         "
              f"{mean['target_plain']:.3f} -> {mean['target_adapted']:.3f}         "
              f"{statistics.mean(gains):+.3f} ({min(gains):+.3f}..{max(gains):+.3f})")
    print("\nbalance   accuracy  macro-F1  recall of 5-9 (5 training images each against 100)")
    for row in balance:
        print(f"{row['balance']:<9} {row['accuracy']:.3f}     {row['macro_f1']:.3f}     {row['minority_recall']:.3f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine(), "adaptation": adaptation, "balance": balance}, indent=1))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
