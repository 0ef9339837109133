"""Command line: `python -m transfer fit|advise|compare DATA [options]`.

    fit      train one model (strategy `auto` by default: the frozen strategies first on one cached pass,
             then a trainable one only if it is likely to be worth its time) and save it in the zoo;
             with --dry-run, print the plan (strategy, epochs, estimate, images, device) and train nothing
    advise   measure the data and say which strategy suits it, and why (nothing is trained)
    compare  fit all four strategies on the same split within a time budget; table and chart

With --json the LAST line of stdout is one JSON object: fit's result (name, strategy, backbone,
classes, num_train, num_val, metrics, metrics_split, train_seconds, path, advice, ...), the advice
(strategy, size, similarity, reasons, ...) or the comparison (id, rows, advice, chart, ...). Bad
input: a one-line message on stderr and exit code 2; a cancelled run (Ctrl-C) exits 130 and saves
nothing (a comparison keeps the runs that had finished).
"""

from zoo.malloc import tune_malloc

tune_malloc()  # before torch is imported: 2-3x on small CPUs

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import TypeVar  # noqa: E402

from transfer import Cancelled, DataError  # noqa: E402
from zoo import ZooError  # noqa: E402

T = TypeVar("T")
STRATEGY_NAMES = ("auto", "feature-extractor", "shallow", "fine-tune", "from-scratch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m transfer", description="Fine-tune pretrained backbones on your images.")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="train a classifier on a folder or zip of class folders and save it in the zoo")
    _data_and_backbone_options(fit)
    fit.add_argument("--strategy", default="auto", choices=STRATEGY_NAMES,
                     help="transfer strategy (default: auto, chosen from the data's size and similarity)")
    fit.add_argument("--max-seconds", type=float, help="time budget; training stops early to stay within it")
    fit.add_argument("--name", help="model name in the zoo (default: DATA-STRATEGY-TIMESTAMP)")
    fit.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    fit.add_argument("--dry-run", action="store_true",
                     help="print the plan (strategy, epochs, estimated seconds, images, device) and train nothing")
    fit.add_argument("--text-encoder", metavar="minilm|hashing|NAME|none",
                     help="for data with a metadata.jsonl/csv of texts: minilm (default, bundled), hashing, "
                          "a sentence-transformers model name (online), or none to ignore the texts")
    fit.add_argument("--target-domain", metavar="DIR_OR_ZIP",
                     help="images from where the model will be used (no labels needed; class folders, if any, "
                          "only measure the target accuracy): the fit adapts to them when they look different")
    fit.add_argument("--adaptation", default="auto", choices=("auto", "on", "off"),
                     help="with --target-domain: auto (adapt when the measured shift is large), on, or off")
    fit.add_argument("--balance", default="auto", choices=("auto", "weights", "resample", "none"),
                     help="lopsided classes: auto (by the imbalance ratio), class weights, resampling, or none")
    _output_options(fit)

    advise = commands.add_parser("advise", help="say which strategy suits the data, and why (trains nothing)")
    _data_and_backbone_options(advise)
    advise.add_argument("--budget-seconds", type=float,
                        help="time the fit may take: strategies estimated to need more are passed over")
    _output_options(advise)

    compare = commands.add_parser("compare", help="fit all four strategies on the same split within a time budget")
    _data_and_backbone_options(compare)
    compare.add_argument("--budget-seconds", type=float,
                         help="time for the whole comparison, shared by the runs in proportion to their estimates")
    compare.add_argument("--strategies", nargs="+", choices=STRATEGY_NAMES[1:], default=list(STRATEGY_NAMES[1:]),
                         help="the strategies to run (default: all four)")
    compare.add_argument("--name", help="comparison id and prefix of its models' names (default: DATA-TIMESTAMP)")
    _output_options(compare)
    return parser


def _data_and_backbone_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("data", help="folder of class folders (or train/ val/ [test/] folders), or a .zip of one")
    command.add_argument("--backbone", default="tf_efficientnet_lite0",
                         help="bundled tf_efficientnet_lite0/1/2 (offline), zoo:NAME, ARCH@file.safetensors, or a timm name (online)")
    command.add_argument("--epochs", type=int, help="passes over the images (trainable strategies; default 5)")
    command.add_argument("--image-size", type=int, help="input size in px (default: chosen from the images' median "
                         "side, 64 px at least, at most 224 frozen / 128 trainable)")
    command.add_argument("--batch-size", type=int, default=32)
    command.add_argument("--zoo", help="zoo folder (default: $ZOO_DIR or ~/.local/share/transfer-zoo)")
    command.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps",
                         help="where to compute (default auto: CUDA, then MPS, else the CPU); under accelerate "
                              "launch / torchrun the launcher chooses")
    if command.prog.split()[-1] != "advise":
        command.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                             help="autocast (default auto: bf16 on a GPU that has it, else fp16 on CUDA; fp32 on a CPU)")
        command.add_argument("--workers", type=int, metavar="N",
                             help="data loader processes that decode images (default: the spare CPU cores)")


def _output_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--seed", type=int, default=0,
                         help="random seed of the split, initialisation, augmentation and batch order (default 0): "
                              "the same seed, data and number of CPU threads give the same model")
    command.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet or not main_process() else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "fit":
            return _fit(args)
        if args.command == "advise":
            return _advise(args)
        if args.command == "compare":
            return _compare(args)
    except (DataError, ZooError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (Cancelled, KeyboardInterrupt):
        kept = "; the runs that had finished are kept in the zoo" if args.command == "compare" else ""
        print(f"cancelled: nothing was saved{' of the running fit' if kept else ''}{kept}", file=sys.stderr)
        return 130
    return 1


def _fit(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _plan(args)
    from transfer.fit import fit

    result = _with_progress_bar(args, lambda bar: fit(
        args.data, backbone=args.backbone, strategy=args.strategy, name=args.name, zoo=args.zoo,
        epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
        max_seconds=args.max_seconds, overwrite=args.overwrite, seed=args.seed,
        text_encoder=args.text_encoder, progress=bar, device=args.device, precision=args.precision,
        workers=args.workers, target_domain=args.target_domain, adaptation=args.adaptation, balance=args.balance))
    if not main_process():  # several processes: the main one reports
        return 0
    for file, reason in result.skipped:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    m = result.metrics
    print(f"{result.name}: {result.strategy} on {result.backbone}, {len(result.classes)} classes, "
          f"{result.num_train} train / {result.num_val} val images")
    if result.advice:
        print(f"  auto chose {result.strategy}: {' '.join(result.advice['reasons'])}")
    minority = (result.balance or {}).get("minority") or []
    if minority:  # lopsided classes: macro-F1 and the minority's recall say more than accuracy
        recall = ", ".join(f"{label} {m['per_class'][label]['recall']:.2f}" for label in minority[:8])
        print(f"  {result.metrics_split} macro-F1 {m['macro_f1']:.3f}; recall of the smallest classes: {recall}; "
              f"accuracy {m['accuracy']:.3f} in {result.train_seconds:.1f} s")
    else:
        print(f"  {result.metrics_split} accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} "
              f"in {result.train_seconds:.1f} s")
    for note in result.notes if not result.advice else []:  # (auto's reasons carry them already)
        print(f"  {note}")
    scores = (result.adaptation or {}).get("target_accuracy")
    if scores:
        print("  target-domain accuracy: " + ", ".join(f"{key} {value:.3f}" for key, value in scores.items()
                                                       if value is not None))
    print(f"  saved to {result.path}")
    zoo_option = f" --zoo {args.zoo}" if args.zoo else ""
    print(f"next: python -m zoo{zoo_option} predict {result.name} IMAGE.jpg   "
          f"(or `python app.py`: it is in the Predict tab)")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from transfer.plan import plan_fit

    plan = _with_progress_bar(args, lambda bar: plan_fit(
        args.data, backbone=args.backbone, strategy=args.strategy, epochs=args.epochs, image_size=args.image_size,
        batch_size=args.batch_size, max_seconds=args.max_seconds, seed=args.seed, zoo=args.zoo, progress=bar,
        device=args.device))
    print(json.dumps(plan.to_json()) if args.json else plan.text())
    return 0


def _advise(args: argparse.Namespace) -> int:
    from transfer.advise import advise

    advice = _with_progress_bar(args, lambda bar: advise(
        args.data, backbone=args.backbone, zoo=args.zoo, image_size=args.image_size, epochs=args.epochs,
        budget_seconds=args.budget_seconds, batch_size=args.batch_size, seed=args.seed, progress=bar,
        device=args.device))
    if args.json:
        print(json.dumps(advice.to_json()))
        return 0
    size, similarity = advice.size, advice.similarity
    print(f"strategy: {advice.strategy}")
    for reason in advice.reasons:
        print(f"  {reason}")
    print(f"size: {size['num_train']} training images, {size['num_classes']} classes, "
          f"{size['median_per_class']:g} per class (median; smallest {size['smallest_class']}): {size['size_class']}")
    shift = similarity["feature_shift"]
    stages = " ".join(f"{accuracy:.0%}" for accuracy in similarity["stage_accuracy"])
    print(f"similarity: {'similar' if similarity['similar'] else 'different'}; feature shift "
          f"{'n/a' if shift is None else f'{shift:.3f}'} (similar up to {advice.thresholds['shift_similar']:g}); "
          f"probe accuracy by stage [{stages}], final {similarity['final_accuracy']:.0%} "
          f"({similarity['probe_images']} images at {similarity['image_size']} px)")
    print("image size: " + ", ".join(f"{name} {px} px" for name, px in advice.image_sizes.items())
          + (f" (the images' median shorter side: {advice.median_side} px)" if advice.median_side else ""))
    print("estimated seconds: " + ", ".join(f"{name} {seconds:g}" for name, seconds in advice.estimated_seconds.items())
          + (f" (budget {advice.budget_seconds:g})" if advice.budget_seconds else "")
          + (f"; this machine ran the feature pass {advice.speed:g}x as long as the cost model expects, "
             "and the estimates allow for it" if advice.speed != 1 else ""))
    print(f"next: python -m transfer fit {args.data}   (auto takes this advice; the measured features are cached)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from transfer.compare import compare

    comparison = _with_progress_bar(args, lambda bar: compare(
        args.data, backbone=args.backbone, budget_seconds=args.budget_seconds, image_size=args.image_size,
        epochs=args.epochs, batch_size=args.batch_size, strategies=args.strategies, name=args.name, zoo=args.zoo,
        seed=args.seed, progress=bar, device=args.device, precision=args.precision, workers=args.workers))
    if args.json:
        print(json.dumps(comparison.to_json()))
        return 0
    print(comparison.table())
    why = comparison.auto or comparison.advice
    if why:
        print(f"auto would take {comparison.advised}: {' '.join(why['reasons'])}")
    print(f"models: {', '.join(row.name for row in comparison.rows if row.name)}")
    print(f"chart: {comparison.chart}")
    return 0


def _with_progress_bar(args: argparse.Namespace, work: Callable[["ProgressBar | None"], T]) -> T:
    """Run `work(bar)` with progress on stderr (None with --quiet), closed however it ends.

    `advise` prints its advice itself, so its bar does not announce it too."""
    bar = None if args.quiet or not main_process() else ProgressBar(announce_advice=args.command != "advise")
    try:
        return work(bar)
    finally:
        if bar:
            bar.close()


def main_process() -> bool:
    """True unless this is one of the other processes of an `accelerate launch` / `torchrun` run."""
    return int(os.environ.get("RANK", "0")) == 0


class ProgressBar:
    """Renders `transfer.progress.Progress` events on stderr: in a terminal, one tqdm bar per stage and
    a line per epoch; when stderr is a file or a pipe, plain lines only (a line per stage and per
    epoch), so a log is not littered with bar redraws."""

    UNITS = {"read": "img", "features": "img", "train": "step", "probe": "stage"}  # other stages count epochs

    def __init__(self, *, announce_advice: bool = True, interactive: bool | None = None):
        self.bar = None
        self.stage = None
        self.announce_advice = announce_advice
        self.interactive = sys.stderr.isatty() if interactive is None else interactive

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if event.stage == "advice":  # "auto chose X: <reasons>"; the reasons come once, with the result
            self.close()
            if self.announce_advice:
                print(event.message.split(": ", 1)[0] + " (why: see the end)", file=sys.stderr)
            return
        if event.stage in ("start", "save", "evaluate", "auto", "compare"):
            self.close()
            if event.message:
                print(event.message, file=sys.stderr)
            return
        if event.stage == "compare-row":  # one run of a comparison finished
            self.close()
            row = event.metrics
            print(f"{row['strategy']}: " + (f"failed: {row['error']}" if row["error"] else
                  f"accuracy {row['accuracy']:.3f}, macro-F1 {row['macro_f1']:.3f} in {row['seconds']:.1f} s"),
                  file=sys.stderr)
            return
        if event.stage == "epoch":  # the end of a training epoch: one line that stays
            scores = ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items())
            tqdm.write(f"epoch {event.epoch}/{event.total}: {scores}", file=sys.stderr)
            return
        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            if self.interactive:
                self.bar = tqdm(total=event.total, desc=event.stage, unit=self.UNITS.get(event.stage, "epoch"),
                                file=sys.stderr, leave=False, dynamic_ncols=True)
            else:
                print(f"{event.stage}: {event.total} {self.UNITS.get(event.stage, 'epoch')}s", file=sys.stderr)
        if self.bar is not None:
            if event.metrics:
                self.bar.set_postfix({k: round(v, 3) for k, v in event.metrics.items()}, refresh=False)
            self.bar.update(event.done - self.bar.n)  # redraws at most every tqdm mininterval

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None


if __name__ == "__main__":
    sys.exit(main())
