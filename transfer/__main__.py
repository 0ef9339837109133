"""Command line: `python -m transfer fit DATA [options]`.

With --json the LAST line of stdout is one JSON object (name, strategy, backbone, classes,
num_train, num_val, metrics, metrics_split, train_seconds, path, ...). Bad input: a one-line
message on stderr and exit code 2; a cancelled run (Ctrl-C) exits 130 and saves nothing.
"""

from zoo._malloc import tune_malloc

tune_malloc()  # before torch is imported: 2-3x on small CPUs

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from transfer import Cancelled, DataError  # noqa: E402
from zoo import ZooError  # noqa: E402

STRATEGY_NAMES = ("feature-extractor", "shallow", "fine-tune", "from-scratch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m transfer", description="Fine-tune pretrained backbones on your images.")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="train a classifier on a folder or zip of class folders and save it in the zoo")
    fit.add_argument("data", help="folder of class folders (or train/ val/ [test/] folders), or a .zip of one")
    fit.add_argument("--backbone", default="tf_efficientnet_lite0",
                     help="bundled tf_efficientnet_lite0/1/2 (offline), zoo:NAME, ARCH@file.safetensors, or a timm name (online)")
    fit.add_argument("--strategy", default="feature-extractor", choices=STRATEGY_NAMES,
                     help="transfer strategy (default: feature-extractor)")
    fit.add_argument("--epochs", type=int, help="passes over the images (trainable strategies; default 6)")
    fit.add_argument("--image-size", type=int, help="input size in px (default: 224 frozen, 128 trainable)")
    fit.add_argument("--batch-size", type=int, default=32)
    fit.add_argument("--max-seconds", type=float, help="time budget; training stops early to stay within it")
    fit.add_argument("--name", help="model name in the zoo (default: DATA-STRATEGY-TIMESTAMP)")
    fit.add_argument("--zoo", help="zoo folder (default: $ZOO_DIR or ~/.local/share/transfer-zoo)")
    fit.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    fit.add_argument("--text-encoder", metavar="minilm|hashing|NAME|none",
                     help="for data with a metadata.jsonl/csv of texts: minilm (default, bundled), hashing, "
                          "a sentence-transformers model name (online), or none to ignore the texts")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "fit":
            return _fit(args)
    except (DataError, ZooError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        print("cancelled: nothing was saved", file=sys.stderr)
        return 130
    return 1


def _fit(args: argparse.Namespace) -> int:
    from transfer.fit import fit

    bar = None if args.quiet else ProgressBar()
    try:
        result = fit(
            args.data, backbone=args.backbone, strategy=args.strategy, name=args.name, zoo=args.zoo,
            epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
            max_seconds=args.max_seconds, overwrite=args.overwrite, seed=args.seed,
            text_encoder=args.text_encoder, progress=bar,
        )
    finally:
        if bar:
            bar.close()
    for file, reason in result.skipped:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        m = result.metrics
        print(f"{result.name}: {result.strategy} on {result.backbone}, {len(result.classes)} classes, "
              f"{result.num_train} train / {result.num_val} val images")
        print(f"  {result.metrics_split} accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} "
              f"in {result.train_seconds:.1f} s")
        print(f"  saved to {result.path}")
    return 0


class ProgressBar:
    """Renders `transfer.train.Progress` events on stderr: one tqdm bar per stage, a line per epoch."""

    UNITS = {"read": "img", "features": "img", "train": "step"}  # other stages count epochs

    def __init__(self):
        self.bar = None
        self.stage = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if event.stage in ("start", "save", "evaluate"):
            self.close()
            if event.message:
                print(event.message, file=sys.stderr)
            return
        if event.stage == "epoch":  # the end of a training epoch: one line that stays
            scores = ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items())
            tqdm.write(f"epoch {event.epoch}/{event.total}: {scores}", file=sys.stderr)
            return
        if event.stage != self.stage or self.bar is None:
            self.close()
            self.bar = tqdm(total=event.total, desc=event.stage, unit=self.UNITS.get(event.stage, "epoch"),
                            file=sys.stderr, leave=False, dynamic_ncols=True)
            self.stage = event.stage
        if event.metrics:
            self.bar.set_postfix({k: round(v, 3) for k, v in event.metrics.items()}, refresh=False)
        self.bar.update(event.done - self.bar.n)  # redraws at most every tqdm mininterval

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


if __name__ == "__main__":
    sys.exit(main())
