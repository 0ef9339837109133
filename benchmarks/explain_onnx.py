"""Grad-CAM and ONNX speed for tf_efficientnet_lite0 at 224 px (the built-in ImageNet classifier), on the CPU.

    python benchmarks/explain_onnx.py [--repeats N] [--threads T]

Rows: Grad-CAM latency per image (`zoo.explain`, one image, and a batch of 8 per image; the
model is loaded and warm, pytorch-grad-cam imported); ONNX export time (`zoo.onnx_export`: trace,
metadata and the onnxruntime check) and file size; predict latency of the same network in PyTorch
(`zoo.predict`'s loaded model: BatchNorm folded, channels-last, inference mode) and in onnxruntime
(CPU provider), for one image and per image in a batch of 32, on already-preprocessed input (the
decoding is the same for both). Figures are medians of `--repeats` runs after a warm-up. Runs in a
temporary zoo; prints a table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from zoo.malloc import tune_malloc  # noqa: E402

tune_malloc()  # before torch, as the CLI does

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODEL = "tf_efficientnet_lite0"
PHOTO = ROOT / "assets" / "photos" / "coffee.jpg"


def median_seconds(work, repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and onnxruntime threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import onnxruntime

    from zoo.explain import explain, explain_images
    from zoo.onnx_export import export_onnx, onnx_feeds
    from zoo.predict import ModelCache

    zoo = Path(tempfile.mkdtemp(prefix="tz-explain-"))
    loaded = ModelCache().get(MODEL, zoo=zoo)
    rows = []

    one = median_seconds(lambda: explain(loaded, PHOTO), args.repeats)
    rows.append(("Grad-CAM, one image (224 px)", f"{one * 1000:.0f} ms"))
    batch = median_seconds(lambda: explain_images(loaded, [PHOTO] * 8), max(3, args.repeats // 3))
    rows.append(("Grad-CAM, batch of 8, per image", f"{batch / 8 * 1000:.0f} ms"))

    started = time.perf_counter()
    done = export_onnx(MODEL, zoo=zoo, output=zoo / f"{MODEL}.onnx")
    rows.append(("ONNX export (trace + metadata + onnxruntime check)", f"{time.perf_counter() - started:.1f} s"))
    rows.append(("ONNX file size", f"{done.size_bytes / 2**20:.1f} MB (max |ORT - PyTorch| {done.max_difference:.1g})"))

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = onnxruntime.InferenceSession(str(done.path), options, providers=["CPUExecutionProvider"])
    single = onnx_feeds(loaded.spec, [PHOTO])["image"]
    batch32 = np.ascontiguousarray(np.repeat(single, 32, axis=0))
    for label, pixels in (("one image", single), ("batch of 32, per image", batch32)):
        tensor = torch.from_numpy(pixels).contiguous(memory_format=torch.channels_last)

        def pytorch(tensor=tensor):
            with torch.inference_mode():
                loaded.model(tensor).softmax(dim=1)

        torch_seconds = median_seconds(pytorch, args.repeats) / len(pixels)
        ort_seconds = median_seconds(lambda pixels=pixels: session.run(["probabilities"], {"image": pixels}),
                                     args.repeats) / len(pixels)
        rows.append((f"predict, {label}: PyTorch / onnxruntime",
                     f"{torch_seconds * 1000:.1f} / {ort_seconds * 1000:.1f} ms ({torch_seconds / ort_seconds:.2f}x)"))

    width = max(len(name) for name, _ in rows)
    print(f"{MODEL} at 224 px on {os.cpu_count()} CPUs, {args.threads} threads, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
