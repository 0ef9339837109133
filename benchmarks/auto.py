"""What `auto` does, as a new user runs it: `python -m transfer fit DATA` with no strategy and no image
size, in a fresh process per dataset, timed from start to exit.

    python benchmarks/auto.py [--datasets digits photos counts] [--output benchmarks/results/auto.json]

Data (made here, offline, with fixed seeds):
- digits: scikit-learn's 1,797 handwritten digits as 8x8 PNG files (80/20 split, as `transfer` makes);
  small images unlike photos, where frozen early layers already separate the classes;
- photos: the four photos in assets/photos (cat, coffee, rocket, astronaut), 20 random crops of each
  (35-90% of the side, kept at their own resolution, some flipped, brightened or darkened): a
  small set that looks like ImageNet, so a frozen strategy should do, in seconds;
- counts: 1,600 images of 1-4 coloured dots on noise (64 px, 400 per count): ImageNet's frozen
  features plateau far below what fine-tuning reaches (about 0.76 against 0.87), so auto should
  go on to fine-tune.

Prints a table (dataset, images, what auto ran with each stage's validation accuracy and seconds,
the final choice, its accuracy, the whole process's seconds) and writes JSON. Timings depend on
what else runs on the machine: the table says how loaded it was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout's packages and run.py's helpers

from run import MALLOC, machine, make_digits, timed  # noqa: E402

DATASETS = ("digits", "photos", "counts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "auto.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tz-auto-"))
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in MALLOC.items()},
           "ZOO_DIR": str(work / "zoo"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    makers = {"digits": make_digits, "photos": make_photos, "counts": make_counts}
    rows = []
    try:
        subprocess.run([sys.executable, "-c", "from zoo.catalog import resolve_weights; "
                        "resolve_weights('tf_efficientnet_lite0')"], env=env, cwd=ROOT, check=True)  # one-time, untimed
        for name in args.datasets:
            data = makers[name](work / name)
            load_before = os.getloadavg()[0]
            run = timed([sys.executable, "-m", "transfer", "fit", str(data), "--name", f"auto-{name}", "--json",
                         "--quiet"], env)
            rows.append(row_for(name, data, run, load_before))
            print_row(rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print()
    print_table(rows)
    print(f"\nJSON: {args.output}")


def row_for(name: str, data: Path, run: dict, load_before: float) -> dict:
    result = run["result"]
    advice = result["advice"]
    return {
        "dataset": name,
        "images": result["num_train"] + result["num_val"] + result["num_test"],
        "image_size": result["image_size"],
        "stages": [{"strategy": t["strategy"], "val_accuracy": t["accuracy"], "seconds": t["seconds"],
                    "detail": t["detail"]} for t in advice["tried"]],
        "measure_seconds": advice["seconds"] - sum(t["seconds"] for t in advice["tried"]),
        "verdict": advice["verdict"],
        "choice": result["strategy"],
        "val_accuracy": result["val_accuracy"],
        "whole_process_seconds": round(run["wall"], 1),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "reasons": advice["reasons"],
    }


def print_row(row: dict) -> None:
    print(f"{row['dataset']}: auto chose {row['choice']} ({row['verdict']}), validation accuracy "
          f"{row['val_accuracy']:.3f}, {row['whole_process_seconds']:.1f} s whole process", file=sys.stderr)


def print_table(rows: list[dict]) -> None:
    print(f"{'dataset':<8} {'images':>6} {'px':>4}  {'what auto ran (validation accuracy, seconds)':<62} "
          f"{'choice':<18} {'accuracy':>8} {'seconds':>8}  load")
    for row in rows:
        stages = ", ".join(f"{s['strategy']} {s['val_accuracy']:.3f} {s['seconds']:.1f}s" for s in row["stages"])
        ran = f"measure {row['measure_seconds']:.1f}s; {stages}"
        print(f"{row['dataset']:<8} {row['images']:>6} {row['image_size']:>4}  {ran:<62} {row['choice']:<18} "
              f"{row['val_accuracy']:>8.3f} {row['whole_process_seconds']:>8.1f}  "
              f"{row['load_average'][0]:.1f}-{row['load_average'][1]:.1f}")
    print("(seconds: measure = advice's frozen pass and probes; each stage its own fit; the last column "
          "is the 1-minute load average before and after, on this machine's cores)")


# --- data -----------------------------------------------------------------------------------------------


def make_photos(root: Path, crops: int = 20) -> Path:
    """photos/<photo>/<n>.jpg: random crops of each photo in assets/photos, at their own resolution."""
    from PIL import Image, ImageEnhance, ImageOps

    rng = random.Random(0)
    for photo_path in sorted((ROOT / "assets" / "photos").glob("*.jpg")):
        photo = ImageOps.exif_transpose(Image.open(photo_path)).convert("RGB")
        (root / photo_path.stem).mkdir(parents=True)
        for index in range(crops):
            side = rng.uniform(0.35, 0.9)
            width, height = int(photo.width * side), int(photo.height * side)
            x, y = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
            crop = photo.crop((x, y, x + width, y + height))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3))
            crop.save(root / photo_path.stem / f"{index:02d}.jpg", quality=90)
    return root


def make_counts(root: Path, per_class: int = 400, side: int = 64) -> Path:
    """counts/<n>-dots/<i>.png: 1-4 dots of random colours and sizes, apart, on blurred noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(0)
    noise = np.random.default_rng(0)
    for count in range(1, 5):
        folder = root / f"{count}-dots"
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = noise.normal(128, 40, (side, side, 3)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1))
            draw, placed = ImageDraw.Draw(image), []
            while len(placed) < count:
                radius = rng.uniform(4, 8)
                x, y = rng.uniform(radius + 1, side - radius - 1), rng.uniform(radius + 1, side - radius - 1)
                if all(math.dist((x, y), (px, py)) > radius + pr + 2 for px, py, pr in placed):
                    placed.append((x, y, radius))
                    colour = tuple(rng.randrange(256) for _ in range(3))
                    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
            image.save(folder / f"{index:04d}.png")
    return root


if __name__ == "__main__":
    main()
