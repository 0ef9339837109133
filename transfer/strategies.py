"""The four classic transfer strategies, as data.

Pick by dataset SIZE and SIMILARITY to the backbone's pretraining data:

    feature-extractor  small, similar    whole backbone frozen; a new linear head trains on features
                                         computed once and cached (seconds)
    shallow            small, different  the backbone is cut after an early stage (the cut depth is
                                         chosen on validation data from one cached pass over all
                                         stages), frozen; a new linear head on its pooled features
    fine-tune          large, similar    phase 1: head warm-up on the frozen (cached) features;
                                         phase 2: everything trains, with layer-wise LR decay so the
                                         stem learns ~16x slower than the head
    from-scratch       large, different  everything trains from random initialisation

`fit` reads these fields; nothing else about a strategy is special-cased.
"""

from __future__ import annotations

from dataclasses import dataclass

from transfer import DataError


@dataclass(frozen=True)
class Strategy:
    name: str
    when: str  # one line a user reads when choosing
    pretrained: bool  # start from pretrained weights (False: random init)
    trains_backbone: bool  # False: head only, on cached frozen features
    search_cut: bool = False  # choose the cut stage on validation data (shallow)
    head_warmup: bool = False  # phase 1 trains the head on the frozen backbone (fine-tune)
    lr: float = 1e-3  # peak learning rate of the head (other groups: scaled by layer decay)
    layer_decay: float | None = None  # per depth group LR multiplier; 0.85 on lite0: stem ~1/16 of the head
    image_size: int | None = None  # default input size; None: the weights' own (224 for lite0)
    epochs: int = 5  # default passes over the training images when the backbone trains
    warmup_epochs: float = 0.0  # linear LR warm-up at the start of backbone training
    freeze_bn_stats: bool = False  # BatchNorm keeps its pretrained statistics while the backbone trains
    patience: int | None = 3  # epochs without validation gain before stopping; None: run every epoch


STRATEGIES: dict[str, Strategy] = {
    strategy.name: strategy
    for strategy in (
        Strategy(
            name="feature-extractor",
            when="small data that looks like ImageNet photos: fastest, trains only a new head",
            pretrained=True,
            trains_backbone=False,
            lr=3e-3,
        ),
        Strategy(
            name="shallow",
            when="small data unlike ImageNet (scans, drawings, textures): keeps only early, generic layers",
            pretrained=True,
            trains_backbone=False,
            search_cut=True,
            lr=3e-3,
        ),
        Strategy(
            name="fine-tune",
            when="plenty of data (hundreds of images per class) that looks like photos: most accurate",
            pretrained=True,
            trains_backbone=True,
            head_warmup=True,
            freeze_bn_stats=True,
            lr=3e-4,
            layer_decay=0.85,
            image_size=128,
            epochs=5,
            warmup_epochs=1,
        ),
        Strategy(
            name="from-scratch",
            when="lots of data unlike anything pretrained: random start, needs the most data and time",
            pretrained=False,
            trains_backbone=True,
            lr=3e-3,  # random init: a higher rate than fine-tuning
            image_size=128,
            epochs=5,
            patience=None,  # early epochs barely move validation: no early stopping
        ),
    )
}

# --- the input size -------------------------------------------------------------------------------
IMAGE_SIZE_RANGE = (16, 1024)  # px; every setting of the image size is checked against this


def check_image_size(size: int | None) -> int | None:
    """`size` (None: the default), or `DataError` when it is out of range."""
    low, high = IMAGE_SIZE_RANGE
    if size is not None and not low <= size <= high:
        raise DataError(f"image size {size} px is out of range; use {low}-{high} (for example 224)")
    return size


NETWORK_STRIDE = 32  # px: how much the usual timm CNN (lite0 among them) shrinks its input by its last stage
MIN_CHOSEN_SIZE = 2 * NETWORK_STRIDE  # px: the smallest size chosen from the images: the last stage still
# sees a 2x2 map (on 8x8 digits shallow scores 0.986 at 64 px; feature-extractor 0.89 at 32 px, 0.95 at 64)


def image_size_for(strategy: str | Strategy, requested: int | None, native: int, median_side: int | None = None) -> int:
    """The input size of a fit: what was asked for; else, when the images' median shorter side is
    known (`transfer.data.Dataset.median_side`, read from their headers), that side rounded to a
    multiple of the network's stride, at least `MIN_CHOSEN_SIZE` and at most the strategy's cap;
    else the cap itself. The cap keeps CPU time in hand: the strategy's own size (trainable
    strategies: 128 px, which keeps a 500-image fine-tune near a minute on 2 cores), else the
    backbone's native size (what its weights were trained at: 224 px for lite0)."""
    plan = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if check_image_size(requested):
        return requested
    cap = plan.image_size or native
    if not median_side:
        return cap
    return min(cap, max(MIN_CHOSEN_SIZE, NETWORK_STRIDE * round(median_side / NETWORK_STRIDE)))


def describe_image_size(sizes: dict[str, int], requested: int | None, median_side: int | None) -> str:
    """One plain sentence: the input size(s) of `sizes` ({strategy: px}, from `image_size_for`) and why."""
    frozen = sorted({px for name, px in sizes.items() if not STRATEGIES[name].trains_backbone})
    trained = sorted({px for name, px in sizes.items() if STRATEGIES[name].trains_backbone})
    read_at = " and ".join(f"{px} px" for px in sorted({*frozen, *trained}))
    if frozen and trained and frozen != trained:
        read_at = (f"{' and '.join(f'{px} px' for px in frozen)} for the frozen strategies and "
                   f"{' and '.join(f'{px} px' for px in trained)} when the whole network trains")
    if requested:
        return f"The images are read at {read_at}, as you asked."
    if not median_side:
        return f"The images are read at {read_at}, the strategies' default."
    side = f"Your images are about {median_side} px on their shorter side (median), so they are read at {read_at}"
    largest = max(sizes.values())
    if min(sizes.values()) == MIN_CHOSEN_SIZE and median_side < MIN_CHOSEN_SIZE:
        return (f"{side}: enlarged to the smallest size at which the network's last layers still see a 2x2 "
                "grid; larger would cost time without adding detail.")
    if median_side > largest + NETWORK_STRIDE / 2:
        return f"{side}: shrunk, because larger inputs cost much more CPU time for little gain."
    return f"{side}: about their own size (a multiple of the network's {NETWORK_STRIDE}-px stride)."


HEAD_EPOCHS = 200  # upper bound for head training on cached features (early stopping ends it sooner)
WARMUP_HEAD_EPOCHS = 30  # fine-tune phase 1: enough to give the head a sensible start


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise DataError(f"Unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}, "
                        "or 'auto' to let the fit choose from the data") from None


# --- how long a fit takes --------------------------------------------------------------------------
# Per-image costs of tf_efficientnet_lite0 on a 2-core CPU (channels-last, malloc tuned), fitted as
# fixed + per-pixel terms to measurements at 32-224 px: inference ~98 img/s at 224 px and ~300 at
# 128 px; a training step ~37 img/s at 128 px. Other backbones scale by their relative cost.
INFERENCE_SECONDS = (1.0e-3, 0.18e-6)  # (per image, per pixel)
TRAIN_SECONDS = (8.0e-3, 1.0e-6)
DECODE_SECONDS = 1.0e-3  # per image, small files; large photos decode at reduced scale
BACKBONE_COST = {"tf_efficientnet_lite0": 1.0, "tf_efficientnet_lite1": 1.5, "tf_efficientnet_lite2": 2.2}
UNKNOWN_BACKBONE_COST = 3.0
FIXED_SECONDS = 1.0  # building the model, saving it
# heads on cached features, measured on 400-1,800 digits: the linear head 0.3 s, shallow's five probes
# (one per stage) 1.6-4 s; fine-tune's warm-up head is short
HEAD_SECONDS = {"feature-extractor": 0.5, "shallow": 3.0, "fine-tune": 1.0, "from-scratch": 0.0}


def estimate_seconds(
    strategy: str,
    *,
    num_train: int,
    num_eval: int,
    image_size: int | None = None,
    epochs: int | None = None,
    architecture: str = "tf_efficientnet_lite0",
    native_size: int = 224,
    median_side: int | None = None,
    features_cached: bool = False,
    speed: float = 1.0,
) -> float:
    """Rough wall-clock seconds for a fit on a 2-core CPU, for ETAs and budgets.

    num_eval: validation + test images. image_size / epochs default to the strategy's own
    (`image_size_for`; native_size: the backbone's own input size, median_side: the images').
    features_cached: the frozen features of these images at this size are already in the cache
    (e.g. `transfer.advise` just computed them), so the one backbone pass and the decoding are free.
    speed: how much slower this machine runs right now than the model assumes (measured, e.g. by
    timing a feature pass against `estimate_pass_seconds`); 2.0 doubles every figure.
    """
    plan = get_strategy(strategy)
    size = image_size_for(plan, image_size, native_size, median_side)
    scale = BACKBONE_COST.get(architecture, UNKNOWN_BACKBONE_COST)
    infer = scale * (INFERENCE_SECONDS[0] + INFERENCE_SECONDS[1] * size * size)
    train = scale * (TRAIN_SECONDS[0] + TRAIN_SECONDS[1] * size * size)
    images = num_train + num_eval
    seconds = FIXED_SECONDS + HEAD_SECONDS[plan.name]
    if (not plan.trains_backbone or plan.head_warmup) and not features_cached:
        seconds += estimate_pass_seconds(images, image_size=size, architecture=architecture)  # fills the cache
    elif plan.trains_backbone:
        seconds += images * DECODE_SECONDS
    if plan.trains_backbone:
        passes = epochs or plan.epochs
        seconds += passes * (num_train * train + num_eval * infer)
    return seconds * speed


def estimate_pass_seconds(images: int, *, image_size: int, architecture: str = "tf_efficientnet_lite0") -> float:
    """Decoding `images` and one frozen forward pass over them (what fills the feature cache)."""
    scale = BACKBONE_COST.get(architecture, UNKNOWN_BACKBONE_COST)
    return images * (DECODE_SECONDS + scale * (INFERENCE_SECONDS[0] + INFERENCE_SECONDS[1] * image_size ** 2))
