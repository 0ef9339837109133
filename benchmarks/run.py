"""Speed of Transfer Zoo against the usual ways of doing the same thing, on this machine.

    python benchmarks/run.py [--quick] [--skip-app] [--output benchmarks/results/latest.json]

Data: scikit-learn's 1,797 handwritten digits as PNG files, split 80/20 (stratified, seed 0) into
train/ and val/ folders so that every contender trains and scores on exactly the same images.
Backbone: tf_efficientnet_lite0 with the bundled ImageNet weights. Every contender runs as a fresh
process with the same environment (malloc settings included), and is timed from start to exit.

Rows: the floor of a frozen strategy (decode each image once, one batched forward pass); our
feature-extractor fit (cold, then with the feature cache warm); the textbook 5-epoch frozen
loop; fine-tune training throughput, ours vs a plain PyTorch loop; predict latency and batch
throughput; the app's start-up time and prediction latency under 8 concurrent clients while a
fine-tune runs. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "benchmarks" / "probes.py"
MALLOC = {"MALLOC_TOP_PAD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "4294967296",
          "MALLOC_MMAP_THRESHOLD_": "33554432"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224, help="frozen-strategy image size (the fit's default)")
    parser.add_argument("--train-size", type=int, default=128, help="fine-tune image size (the fit's default)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per timed row (the best is kept)")
    parser.add_argument("--skip-app", action="store_true", help="skip the app start-up and load rows")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 300 images, one repeat (the figures mean little; checks the script)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tz-bench-"))
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in MALLOC.items()},
           "ZOO_DIR": str(work / "zoo"), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "TQDM_DISABLE": "1"}
    try:
        data = make_digits(work / "digits", limit=300 if args.quick else None)
        if args.quick:
            args.repeats = 1
        subprocess.run([sys.executable, "-c", "from zoo.catalog import resolve_weights; resolve_weights('tf_efficientnet_lite0')"],
                       env=env, check=True)  # one-time conversion of the bundled weights, not timed
        rows = measure(args, data, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"machine": machine(), "settings": vars(args) | {"output": str(args.output)}, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print_table(rows)
    print(f"\nJSON: {args.output}")


def measure(args, data: Path, work: Path, env: dict) -> dict:
    zoo = work / "zoo"
    images = sum(1 for _ in data.rglob("*.png"))
    rows: dict = {}

    # 1. the floor: decode once + one forward pass over train+val
    floor = best_of(args.repeats, lambda: timed([sys.executable, str(PROBES), "floor", str(data),
                                                 "--image-size", str(args.image_size)], env))
    rows["floor"] = {"seconds": floor["wall"], "images_per_second": images / floor["wall"]}

    # 2. our feature-extractor fit, whole process, cold feature cache (then warm)
    def fit_cold():
        shutil.rmtree(zoo / "cache" / "features", ignore_errors=True)
        return ours_fit(data, "feature-extractor", args.image_size, env, name="bench-fe")

    cold = best_of(args.repeats, fit_cold)
    warm = ours_fit(data, "feature-extractor", args.image_size, env, name="bench-fe")
    rows["ours_feature_extractor"] = {"seconds": cold["wall"], "accuracy": cold["accuracy"],
                                      "vs_floor": cold["wall"] / floor["wall"]}
    rows["ours_feature_extractor_cached"] = {"seconds": warm["wall"], "accuracy": warm["accuracy"]}

    # 3. the textbook loop: forward pass every epoch, 5 epochs
    textbook = timed([sys.executable, str(PROBES), "textbook", str(data), "--image-size", str(args.image_size),
                      "--epochs", "5"], env)
    rows["textbook_5_epochs"] = {"seconds": textbook["wall"], "accuracy": textbook["result"]["accuracy"],
                                 "slower_than_ours": textbook["wall"] / cold["wall"]}

    # 4. fine-tune training throughput (optimizer steps), ours vs a plain loop
    tuned = ours_fit(data, "fine-tune", args.train_size, env, name="bench-ft", epochs=2)
    ours_rate = max(r["train_images_per_second"] for r in tuned["history"]
                    if r.get("phase") == "train" and r.get("train_images_per_second"))
    plain = timed([sys.executable, str(PROBES), "plain-loop", str(data), "--image-size", str(args.train_size),
                   "--epochs", "2"], env)
    rows["fine_tune_throughput"] = {"ours_images_per_second": ours_rate,
                                    "plain_images_per_second": plain["result"]["best"],
                                    "ratio": ours_rate / plain["result"]["best"], "accuracy": tuned["accuracy"]}

    # 5. predict: one image at a time (model loaded), and a batch of 64
    photos = [str(p) for p in sorted((ROOT / "assets" / "photos").glob("*.jpg"))]
    latency = timed([sys.executable, str(PROBES), "predict", str(zoo), "bench-fe", *photos], env)["result"]
    rows["predict"] = latency

    # 6. the app: start-up, then 8 clients predicting while a fine-tune runs
    if not args.skip_app:
        from app_load import measure_app  # benchmarks/app_load.py

        rows["app"] = measure_app(env, data, photos)
    return rows


def ours_fit(data: Path, strategy: str, image_size: int, env: dict, *, name: str, epochs: int | None = None) -> dict:
    command = [sys.executable, "-m", "transfer", "fit", str(data), "--strategy", strategy, "--image-size",
               str(image_size), "--name", name, "--overwrite", "--json", "--quiet"]
    if epochs:
        command += ["--epochs", str(epochs)]
    run = timed(command, env)
    return {"wall": run["wall"], "accuracy": run["result"]["metrics"]["accuracy"], "history": run["result"]["history"]}


def timed(command: list[str], env: dict) -> dict:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return {"wall": wall, "result": json.loads(done.stdout.strip().splitlines()[-1])}


def best_of(repeats: int, measure_once) -> dict:
    runs = [measure_once() for _ in range(max(1, repeats))]
    return min(runs, key=lambda run: run["wall"])


def make_digits(root: Path, limit: int | None = None) -> Path:
    """digits/{train,val}/<digit>/<n>.png with the same stratified split `transfer` would make."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from transfer.data import Sample, stratified_split

    digits = load_digits()
    samples = [Sample(relpath=f"{label}/{index:04d}.png", label=int(label))
               for index, label in enumerate(digits.target)][:limit]
    train, val = stratified_split(samples, 0.2, 0)
    for split, members in (("train", train), ("val", val)):
        for sample in members:
            path = root / split / sample.relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = digits.images[int(Path(sample.relpath).stem)]
            Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), "L").save(path)
    return root


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def print_table(rows: dict) -> None:
    floor, cold = rows["floor"], rows["ours_feature_extractor"]
    warm, book, tune, pred = rows["ours_feature_extractor_cached"], rows["textbook_5_epochs"], rows["fine_tune_throughput"], rows["predict"]
    lines = [
        ("floor: decode once + 1 forward pass (train+val)", f"{floor['seconds']:.1f} s", f"{floor['images_per_second']:.0f} img/s", ""),
        ("ours: feature-extractor fit, whole process", f"{cold['seconds']:.1f} s", f"acc {cold['accuracy']:.3f}",
         f"{cold['vs_floor']:.2f}x the floor (target <= 1.3)"),
        ("ours: same fit again, feature cache warm", f"{warm['seconds']:.1f} s", f"acc {warm['accuracy']:.3f}", ""),
        ("textbook frozen loop, 5 epochs", f"{book['seconds']:.1f} s", f"acc {book['accuracy']:.3f}",
         f"ours is {book['slower_than_ours']:.1f}x faster (target >= 4)"),
        ("fine-tune training, ours", f"{tune['ours_images_per_second']:.1f} img/s", f"acc {tune['accuracy']:.3f}",
         f"{tune['ratio']:.2f}x the plain loop (target >= 1.0)"),
        ("fine-tune training, plain PyTorch loop", f"{tune['plain_images_per_second']:.1f} img/s", "", ""),
        (f"predict one image ({pred['image_size']} px), p50 / p95", f"{pred['p50_ms']:.1f} / {pred['p95_ms']:.1f} ms", "",
         "target p50 < 50 ms"),
        ("predict a batch of 64", f"{pred['batch_images_per_second']:.0f} img/s", "", ""),
    ]
    if "app" in rows:
        app = rows["app"]
        lines += [
            ("app start-up to first response", f"{app['startup_seconds']:.1f} s", "", ""),
            (f"app predict, 8 clients x {app['requests'] // 8} while fine-tuning, p50 / p95",
             f"{app['p50_ms']:.0f} / {app['p95_ms']:.0f} ms", f"{app['errors']} errors", ""),
        ]
    width = max(len(line[0]) for line in lines)
    print(f"\n{'measurement':<{width}}  {'value':>16}  {'':>12}  note")
    for name, value, extra, note in lines:
        print(f"{name:<{width}}  {value:>16}  {extra:>12}  {note}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
