"""zoo.images: every format and mode a user brings becomes upright 8-bit RGB, or a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from zoo.images import ImageError, open_image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


RED = Image.new("RGB", (40, 30), (220, 20, 20))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_format_opens_as_rgb(fmt):
    image = open_image(encode(RED, fmt))
    assert image.mode == "RGB" and image.size == (40, 30)
    red, green, blue = image.getpixel((20, 15))
    assert red > 150 and green < 90 and blue < 90  # still red (GIF palettes and JPEG are lossy)


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "LA", "RGBA", "I", "F", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    image = open_image(RED.convert(mode) if mode not in ("I", "F") else Image.new(mode, (40, 30), 100))
    assert image.mode == "RGB" and image.size == (40, 30)


def test_transparency_becomes_white_not_black():
    transparent = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert open_image(encode(transparent, "PNG")).getpixel((5, 5)) == (255, 255, 255)


def test_cmyk_jpeg_keeps_its_colour():
    cmyk = RED.convert("CMYK")
    red, green, blue = open_image(encode(cmyk, "JPEG")).getpixel((20, 15))
    assert red > 150 and green < 90 and blue < 90


def test_16_bit_greyscale_is_scaled_not_clipped():
    gradient = np.linspace(0, 65535, 256 * 4, dtype=np.uint16).reshape(4, 256)
    png = encode(Image.fromarray(gradient), "PNG")
    assert Image.open(io.BytesIO(png)).convert("RGB").getpixel((200, 2))[0] == 255  # what naive code gets
    pixels = np.asarray(open_image(png))[..., 0]
    # a plain convert("RGB") turns 99% of this gradient into 255; scaled, it spans 0..255 evenly
    assert (pixels == 255).mean() < 0.01
    assert np.abs(pixels.astype(int) - np.round(gradient / 257)).max() <= 1


def test_exif_rotation_is_applied():
    wide = Image.new("RGB", (60, 20), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 10, 20))  # a red stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    upright = open_image(encode(wide, "JPEG", exif=exif.tobytes()))
    assert upright.size == (20, 60)  # displayed portrait
    top_red = upright.getpixel((10, 3))
    assert top_red[0] > 150 and top_red[2] < 100  # the stripe is now at the top


def test_shorter_side_resize_and_jpeg_draft():
    photo = Image.new("RGB", (1600, 1200), (10, 200, 10))
    image = open_image(encode(photo, "JPEG"), shorter_side=146)
    assert image.size == (195, 146)


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(encode(Image.new("RGB", (200, 200), (1, 2, 3)), "JPEG")[:400])
    with pytest.raises(ImageError, match="broken.jpg"):
        open_image(path)


def test_not_an_image_is_an_error(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is text, not a picture")
    with pytest.raises(ImageError, match="notes.jpg: not an image"):
        open_image(path)


def test_pixel_limit_refuses_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (3000, 3000)).save(path)  # 9 MP: small file, many pixels
    with pytest.raises(ImageError, match="over the limit"):
        open_image(path, max_pixels=1_000_000)
