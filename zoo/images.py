"""Open any image a user might bring and get an upright 8-bit RGB picture.

Training (`transfer.data`) and prediction (`zoo.predict`) both open images here, so a model sees
the same pixels in both. Handled: jpg/png/webp/bmp/gif/tiff; greyscale, palette, RGBA (composited on
white), CMYK, 16-bit and float images (scaled into 0..255, not clipped); EXIF orientation. Images
over a pixel limit are refused from their header, before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo import ZooError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# 40 megapixels covers any phone or camera photo; a decompression bomb declares far more.
DEFAULT_MAX_PIXELS = int(os.environ.get("ZOO_MAX_IMAGE_PIXELS", 40_000_000))

ImageSource = str | Path | bytes | BinaryIO | Image.Image


class ImageError(ZooError):
    """An image that cannot be used; the message names it and says why."""


def is_image_name(name: str | Path) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def resized_side(image_size: int, crop_pct: float) -> int:
    """The shorter side an image is resized to before its centre crop (timm's own rule)."""
    return math.floor(image_size / crop_pct)


def open_image(
    source: ImageSource,
    *,
    shorter_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Decode `source` into an upright RGB image.

    shorter_side: resize (bicubic) so the shorter side has this length. JPEGs are then decoded at
        a reduced scale (`draft`) first, which is several times faster for large photos.
    max_pixels: refuse images declaring more pixels than this, before decoding them.
    name: how to call the image in error messages (defaults to its file name).
    """
    label = name or _describe(source)
    try:
        image = source if isinstance(source, Image.Image) else Image.open(_as_file(source))
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image Pillow can read (expected {_extensions()})") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: declares an enormous number of pixels (a decompression bomb?)") from None
    except (OSError, ValueError) as error:
        raise ImageError(f"{label}: cannot be opened ({error})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{label}: has no pixels")
    if width * height > max_pixels:
        raise ImageError(
            f"{label}: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{max_pixels:,}; resize it first"
        )
    try:
        if shorter_side and image.format == "JPEG":
            scale = shorter_side / min(width, height)
            image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image.load()  # decode now, so a truncated file fails here and not later
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{label}: damaged or truncated image ({error})") from None
    if shorter_side:
        image = resize_shorter_side(image, shorter_side)
    return image


def resize_shorter_side(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    if min(width, height) == side:
        return image
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparency becomes white; high bit depths are scaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float pixels -> 0..255, keeping the image's contrast (never clipping)."""
    values = pixels.astype(np.float64)
    if pixels.dtype.kind == "f":
        low, high = (0.0, 1.0) if values.min() >= 0 and values.max() <= 1 else (values.min(), values.max())
    else:
        # integers: the type's range when it is used (16-bit data), else the values' own range
        high = 65535.0 if values.max() > 255 else 255.0
        low = 0.0 if values.min() >= 0 else values.min()
    if high <= low:
        return np.zeros(pixels.shape, np.uint8)
    return np.clip(np.round((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


def _as_file(source: ImageSource) -> str | Path | BinaryIO:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    return source


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return Path(source).name
    return getattr(source, "name", None) or "image"


def _extensions() -> str:
    return "/".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS if ext not in (".jpeg", ".tif")))
