"""Command line: `python -m zoo COMMAND ...` (or `zoo COMMAND ...`) on the local zoo and the Hub.

    list [--json] [--search TEXT]            the models, newest first (built-ins last)
    show NAME [--json]                       one model: summary, metrics, how it was made
    show NAME --errors                       the misclassified images of its evaluation (file, true, predicted, score)
    predict NAME IMAGE... [--top-k K] [--json] [--text TEXT]...
    explain NAME IMAGE [--target LABEL] [--output FILE.png] [--text TEXT] [--json] [--device D]   Grad-CAM
    rename OLD NEW | remove NAME [--yes] | restore NAME
    export NAME [--format zip|onnx] [--output FILE] | import ZIP [--name NAME] [--overwrite]
    push NAME [--repo-id ID] [--private] | pull REPO_ID [--name NAME] [--revision REV] [--overwrite]
    hub-list [NAMESPACE] [--json]            models of a namespace on the Hub made with Transfer Zoo

`--zoo DIR` works with every command (default: $ZOO_DIR, else ~/.local/share/transfer-zoo).
With --json, `list` prints one JSON array, `show` one object, `predict` one object per image per
line: {"image": path, "predictions": [{"label", "score"}, ...]}. Exit codes: 0 success, 2 bad
input (one line on stderr, no traceback), 130 interrupted.
"""

from zoo.malloc import tune_malloc

tune_malloc()  # before torch is imported: 2-3x on small CPUs

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from zoo import ZooError  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are bad input too: one line, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    zoo_option = argparse.ArgumentParser(add_help=False)
    zoo_option.add_argument("--zoo", default=argparse.SUPPRESS, metavar="DIR",
                            help="zoo folder (default: $ZOO_DIR or ~/.local/share/transfer-zoo)")
    parser = _Parser(prog="python -m zoo", description="Browse, predict with and share the models of your zoo.")
    parser.add_argument("--zoo", metavar="DIR", help="zoo folder (default: $ZOO_DIR or ~/.local/share/transfer-zoo)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[zoo_option])

    listing = command("list", "list the models, newest first")
    listing.add_argument("--search", metavar="TEXT", help="only models whose name, backbone, strategy or classes "
                                                          "contain every word of TEXT")
    listing.add_argument("--json", action="store_true", help="print one JSON array")
    show = command("show", "show one model")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print one JSON object (summary and transfer.json)")
    show.add_argument("--errors", action="store_true",
                      help="list the misclassified images of its evaluation, most confidently wrong first")
    predict = command("predict", "top-k labels for one or more images")
    predict.add_argument("name")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--top-k", type=int, default=5, metavar="K", help="labels per image (default 5)")
    predict.add_argument("--text", action="append", metavar="TEXT",
                         help="image+text models: a text for every image (once), or one per image (repeated)")
    predict.add_argument("--json", action="store_true", help="one JSON object per image per line")
    predict.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps",
                         help="where the model runs (default auto: CUDA, then MPS, else the CPU)")
    explain = command("explain", "Grad-CAM: a heatmap of what made the model choose a class")
    explain.add_argument("name")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument("--target", metavar="LABEL", help="the class to explain (default: the model's top class)")
    explain.add_argument("--output", metavar="FILE.png",
                         help="where to write the overlay (default: IMAGE-STEM.gradcam.png here)")
    explain.add_argument("--text", metavar="TEXT", help="image+text models: the sentence beside the image")
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps",
                         help="where the model runs (default auto: CUDA, then MPS, else the CPU)")
    rename = command("rename", "rename a model")
    rename.add_argument("old")
    rename.add_argument("new")
    remove = command("remove", "delete a model (a built-in one is hidden; `restore` brings it back)")
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask")
    restore = command("restore", "bring back a built-in model that was removed")
    restore.add_argument("name")
    export = command("export", "write a model as one zip (to import elsewhere) or as an ONNX file")
    export.add_argument("name")
    export.add_argument("--format", choices=("zip", "onnx"), default="zip",
                        help="zip: the zoo folder (default); onnx: for onnxruntime, checked against PyTorch")
    export.add_argument("--output", metavar="FILE", help="the file to write (default: NAME.zip or NAME.onnx here)")
    importing = command("import", "add a model from a zip written by export")
    importing.add_argument("archive", metavar="ZIP")
    importing.add_argument("--name", help="name in the zoo (default: the zip's folder name)")
    importing.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    push = command("push", "upload a model to the Hugging Face Hub (needs HF_TOKEN or `hf auth login`)")
    push.add_argument("name")
    push.add_argument("--repo-id", metavar="ID", help="owner/name (default: $ZOO_HUB_NAMESPACE or your user, /NAME)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    pull = command("pull", "download a model pushed by Transfer Zoo from the Hub into the zoo")
    pull.add_argument("repo_id", metavar="REPO_ID")
    pull.add_argument("--name", help="name in the zoo (default: the repository's name)")
    pull.add_argument("--revision", help="branch, tag or commit (default: main)")
    pull.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    hub_list = command("hub-list", "list the Transfer Zoo models of a namespace on the Hub")
    hub_list.add_argument("namespace", nargs="?", help="user or organisation (default: $ZOO_HUB_NAMESPACE or you)")
    hub_list.add_argument("--json", action="store_true", help="print one JSON array")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except ZooError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _list(args: argparse.Namespace) -> int:
    from zoo.catalog import list_entries

    rows = [entry.summary() for entry in list_entries(zoo=args.zoo, query=args.search)]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no models" + (f" match '{args.search}'" if args.search else ""), file=sys.stderr)
        return 0
    table = [("NAME", "STRATEGY", "BACKBONE", "CLASSES", "ACCURACY", "MACRO-F1", "TRAIN", "SIZE", "CREATED")]
    for row in rows:
        if row["damaged"]:
            table.append((row["name"], f"DAMAGED: {row['damaged']}", "", "", "", "", "", "", ""))
            continue
        table.append((
            row["name"], ("built-in " if row["builtin"] else "") + str(row["strategy"] or ""),
            str(row["backbone"] or ""),
            str(row["num_classes"]), _score(row["accuracy"], row["metrics_split"]), _score(row["macro_f1"]),
            str(row["num_train"] or ""), _size(row["size_bytes"]), (row["created"] or "")[:16].replace("T", " "),
        ))
    widths = [max(len(line[i]) for line in table if not line[1].startswith("DAMAGED")) for i in range(len(table[0]))]
    for line in table:
        cells = line[:2] if line[1].startswith("DAMAGED") else line
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    from zoo.catalog import lineage, read_entry

    entry = read_entry(args.name, zoo=args.zoo)
    if args.errors:
        return _errors(entry)
    row = entry.summary()
    if args.json:
        print(json.dumps({**row, "transfer": entry.info}))
        return 0
    classes = row["classes"]
    shown = "; ".join(classes[:12]) + (f"; ... ({len(classes)} in all)" if len(classes) > 12 else "")
    lines = [
        f"{row['name']}{'  (built-in)' if row['builtin'] else ''}",
        f"  strategy   {row['strategy']} on {row['backbone']}",
        f"  classes    {shown}",
        f"  input      {entry.spec.image_size} px" + (", takes a text too" if row["takes_text"] else ""),
    ]
    if row["accuracy"] is not None:
        lines.append(f"  metrics    accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f} "
                     f"({row['metrics_split']} split)")
    if row["num_train"]:
        lines.append(f"  trained on {row['num_train']:,} images")
    chain = lineage(args.name, zoo=args.zoo)
    if chain:
        names = [row["name"]] + [f"{link['name']}{'' if link['present'] else ' (no longer here)'}" for link in chain]
        root = entry.info.get("lineage_root")
        lines.append("  lineage    " + " <- ".join(names + ([root] if root else [])))
    adaptation = entry.info.get("adaptation")
    if adaptation:
        lines.append(f"  adapted    to {adaptation['target']} ({adaptation['images']} images, shift "
                     f"{adaptation['shift']}): {adaptation['method'] or 'no adaptation'}")
    lines += [f"  size       {_size(row['size_bytes'])}", f"  created    {row['created'] or '-'}",
              f"  folder     {row['path']}"]
    print("\n".join(lines))
    return 0


def _predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ZooError(f"--top-k must be 1 or more, not {args.top_k}.")
    texts = args.text
    if texts is not None and len(texts) not in (1, len(args.images)):
        raise ZooError(f"Got {len(args.images)} images and {len(texts)} --text; give one text, or one per image.")
    if texts is not None and len(texts) == 1:
        texts = texts * len(args.images)
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise ZooError(f"No such image file: {missing[0]}")
    from zoo.predict import (  # torch: only once the arguments make sense
        ModelCache,
        predict,
    )

    results = predict(args.name, args.images, texts=texts, top_k=args.top_k, zoo=args.zoo,
                      cache=ModelCache(1, device=args.device))
    for image, predictions in zip(args.images, results):
        if args.json:
            print(json.dumps({"image": image, "predictions": predictions}))
        else:
            print(f"{image}: " + ", ".join(f"{p['label']} {p['score']:.3f}" for p in predictions))
    return 0


def _errors(entry) -> int:
    """The misclassified images recorded in transfer.json (`transfer.errors`), one per line."""
    report = entry.info.get("errors")
    if not report:
        raise ZooError(f"Model '{entry.name}' has no list of misclassified images (a built-in model, or one "
                       "trained before Transfer Zoo kept it).")
    print(f"{report['count']} of {report['evaluated']} {report['split']} images misclassified"
          + (", most confidently wrong first:" if report["files"] else "."))
    table = [("FILE", "TRUE", "PREDICTED", "SCORE")]
    table += [(row["file"], row["true"], row["predicted"], f"{row['score']:.3f}") for row in report["files"]]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table if report["files"] else []:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


def _explain(args: argparse.Namespace) -> int:
    if not Path(args.image).is_file():
        raise ZooError(f"No such image file: {args.image}")
    output = Path(args.output) if args.output else Path.cwd() / f"{Path(args.image).stem}.gradcam.png"
    if output.suffix.lower() != ".png":
        raise ZooError(f"{output}: the overlay is a PNG; give a name ending in .png")
    if not output.parent.is_dir():
        raise ZooError(f"{output.parent} is not a folder; create it first.")
    from zoo.predict import ModelCache, explain  # torch: only once the arguments make sense

    shown = explain(args.name, args.image, args.target, text=args.text, zoo=args.zoo,
                    cache=ModelCache(1, device=args.device))
    shown.overlay.save(output)
    if args.json:
        print(json.dumps({"image": args.image, "label": shown.label, "score": shown.score,
                          "top_label": shown.top_label, "top_score": shown.top_score, "layer": shown.layer,
                          "crop_box": shown.crop_box, "output": str(output)}))
    else:
        print(f"{args.image}: {shown.label} {shown.score:.3f} (top: {shown.top_label} {shown.top_score:.3f}); "
              f"Grad-CAM on {shown.layer}, over the centre crop the model sees -> {output}")
    return 0


def _rename(args: argparse.Namespace) -> int:
    from zoo.catalog import rename_model

    path = rename_model(args.old, args.new, zoo=args.zoo)
    print(f"renamed {args.old} to {args.new} ({path})")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from zoo import zoo_dir
    from zoo.builtin_models import is_builtin
    from zoo.catalog import remove_model
    from zoo.store import validate_name

    folder = zoo_dir(args.zoo) / validate_name(args.name)
    builtin = is_builtin(args.name) and not folder.is_dir()
    if not (folder.is_dir() or builtin):
        raise ZooError(f"No model named '{args.name}' in the zoo at {folder.parent}.")
    if not args.yes:
        if not sys.stdin.isatty():
            raise ZooError(f"Add --yes to remove '{args.name}' without being asked.")
        if input(f"Remove {args.name}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("kept", file=sys.stderr)
            return 0
    remove_model(args.name, zoo=args.zoo)
    print(f"hid the built-in {args.name} (`python -m zoo restore {args.name}` brings it back)" if builtin
          else f"removed {args.name}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from zoo.builtin_models import restore_builtin

    restore_builtin(args.name, zoo=args.zoo)
    print(f"restored {args.name}")
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        from zoo.onnx_export import export_onnx

        done = export_onnx(args.name, zoo=args.zoo, output=args.output)
        print(f"{done.path} ({_size(done.size_bytes)}, inputs {', '.join(done.inputs)}; onnxruntime matches PyTorch "
              f"within {done.max_difference:.1g} on probabilities)")
        return 0
    from zoo.archives import export_model

    print(export_model(args.name, zoo=args.zoo, output=args.output))
    return 0


def _import(args: argparse.Namespace) -> int:
    from zoo.archives import import_model

    name = import_model(args.archive, name=args.name, zoo=args.zoo, overwrite=args.overwrite)
    print(f"imported {name}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from zoo.hub import push_model

    print(push_model(args.name, repo_id=args.repo_id, private=args.private, zoo=args.zoo))
    return 0


def _pull(args: argparse.Namespace) -> int:
    from zoo.hub import pull_model

    name = pull_model(args.repo_id, name=args.name, zoo=args.zoo, revision=args.revision, overwrite=args.overwrite)
    print(f"pulled {args.repo_id} as {name}")
    return 0


def _hub_list(args: argparse.Namespace) -> int:
    from zoo.hub import list_hub_models

    rows = list_hub_models(args.namespace)
    if args.json:
        print(json.dumps(rows, default=str))
    for row in [] if args.json else rows:
        print(f"{row['repo_id']}  {row.get('strategy') or ''}  {'private' if row.get('private') else 'public'}  "
              f"{str(row.get('last_modified') or '')[:16]}")
    if not rows and not args.json:
        print("no Transfer Zoo models found", file=sys.stderr)
    return 0


def _score(value: Any, split: str | None = None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" + (f" ({split})" if split else "")


def _size(size: int | None) -> str:
    if not size:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


COMMANDS = {
    "list": _list, "show": _show, "predict": _predict, "explain": _explain, "rename": _rename, "remove": _remove,
    "restore": _restore, "export": _export, "import": _import, "push": _push, "pull": _pull,
    "hub-list": _hub_list,
}


if __name__ == "__main__":
    sys.exit(main())
