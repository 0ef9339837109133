"""Large data: the same fine-tune on 2,000 and on 20,000 image files; peak memory and images/s.

    python benchmarks/large_data.py [--sizes 2000 20000] [--image-size 128] [--epochs 1]
                                    [--baseline REV] [--device auto] [--output FILE]

Data: scikit-learn's digits, upscaled to 96 px and jittered (shift, rotation, contrast, noise) so no
two files are alike, written as JPEG files in class folders. Each row is `python -m transfer fit
DATA --strategy fine-tune` as a fresh process, timed from start to exit; its peak memory is the
largest resident set of the process (`getrusage`, the largest child), and images/s is the training
throughput the fit itself recorded (epoch 1, transfer.json). Rows:

  new, N images      this checkout, the path chosen automatically (decoded images kept in memory
                     when they fit TRANSFER_MEMORY_MB, else read from disk by loader workers)
  new, streamed      this checkout with TRANSFER_MEMORY_MB=0: always read from disk
  baseline           --baseline REV (a git revision, e.g. the commit before streaming): the old
                     in-memory path, run from a temporary worktree

Prints a table and writes JSON (benchmarks/results/large_data.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {"MALLOC_TOP_PAD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "4294967296", "MALLOC_MMAP_THRESHOLD_": "33554432",
       "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def make_images(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEG files (96 px) in class folders: jittered, upscaled digits, all different."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    for index in range(count):
        source = index % len(digits.images)
        pixels = np.round(digits.images[source] * 255 / 16).astype(np.uint8)
        image = Image.fromarray(pixels, "L").resize((72, 72), Image.Resampling.BICUBIC)
        image = image.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
        canvas = Image.new("L", (96, 96), int(rng.integers(0, 40)))
        canvas.paste(image, tuple(int(v) for v in rng.integers(0, 24, 2)))
        noisy = np.clip(np.asarray(canvas, dtype=np.float32) * rng.uniform(0.7, 1.0) + rng.normal(0, 8, (96, 96)), 0, 255)
        target = folder / str(digits.target[source])
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.astype(np.uint8), "L").convert("RGB").save(target / f"{index:06d}.jpg", quality=90)
    return folder


def run_fit(code: Path, data: Path, zoo: Path, args, extra_env: dict[str, str] | None = None) -> dict:
    """One fit as a fresh process (run from `code`, a checkout): seconds, peak RSS, images/s."""
    command = [sys.executable, "-m", "transfer", "fit", str(data), "--strategy", "fine-tune", "--image-size",
               str(args.image_size), "--epochs", str(args.epochs), "--zoo", str(zoo), "--name", "bench",
               "--quiet", "--json"]
    if code == ROOT:
        command += ["--device", args.device]
    started = time.monotonic()
    # a helper process runs the fit, so getrusage's "largest child" is this fit's alone
    probe = ("import resource, subprocess, sys, json\n"
             "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
             "print(json.dumps({'rc': done.returncode, 'peak_kb': peak, 'stdout': done.stdout, 'stderr': done.stderr[-2000:]}))\n")
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, cwd=code,
                          env={**os.environ, **ENV, **(extra_env or {})})
    seconds = time.monotonic() - started
    outcome = json.loads(done.stdout)
    if outcome["rc"] != 0:
        raise RuntimeError(f"fit failed:\n{outcome['stderr']}")
    result = json.loads(outcome["stdout"].strip().splitlines()[-1])
    info = json.loads((zoo / "bench" / "transfer.json").read_text())
    trained = [row for row in info["history"] if row.get("phase") == "train" and row.get("train_images_per_second")]
    shutil.rmtree(zoo, ignore_errors=True)
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(outcome["peak_kb"] / 1024),
            "images_per_second": trained[0]["train_images_per_second"] if trained else None,
            "accuracy": round(result["metrics"]["accuracy"], 4), "in_memory": info["details"].get("images_in_memory")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--baseline", help="a git revision to compare with (the old in-memory path)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "large_data.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tz-large-"))
    rows = []
    try:
        baseline = None
        if args.baseline:
            baseline = work / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline], cwd=ROOT, check=True,
                           capture_output=True)
        for count in args.sizes:
            data = make_images(work / f"digits-{count}", count)
            contenders = [("new", ROOT, None)]
            if count == min(args.sizes):
                contenders.append(("new, streamed", ROOT, {"TRANSFER_MEMORY_MB": "0"}))
                if baseline:
                    contenders.append((f"baseline {args.baseline}", baseline, None))
            for label, code, extra in contenders:
                row = {"images": count, "code": label, **run_fit(code, data, work / "zoo", args, extra)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            shutil.rmtree(data, ignore_errors=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "baseline")], cwd=ROOT,
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"fine-tune, {args.image_size} px, {args.epochs} epoch(s), device {args.device}")
    print(f"{'images':>7}  {'code':<24} {'seconds':>8} {'peak RSS MB':>12} {'img/s':>7} {'accuracy':>9}  in memory")
    for row in rows:
        print(f"{row['images']:>7}  {row['code']:<24} {row['seconds']:>8} {row['peak_rss_mb']:>12} "
              f"{row['images_per_second'] or 0:>7} {row['accuracy']:>9}  {row['in_memory']}")
    small = [row for row in rows if row["code"] == "new" and row["images"] == min(args.sizes)]
    large = [row for row in rows if row["code"] == "new" and row["images"] == max(args.sizes)]
    if small and large and small[0] is not large[0]:
        print(f"peak RSS {max(args.sizes)} / {min(args.sizes)} images: {large[0]['peak_rss_mb'] / small[0]['peak_rss_mb']:.2f}x")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
