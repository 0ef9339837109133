"""Rebuild assets/ from data that ships inside scikit-learn and scikit-image (no download).

    python assets/make_assets.py

digits/: 20 images per class of scikit-learn's handwritten digits (8x8 greyscale, 16 levels),
written as PNGs in class folders: the example dataset of the README and the app.
photos/: sample photographs bundled with scikit-image, re-encoded as JPEG.
"""

from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
PER_CLASS = 20
PHOTOS = {"cat.jpg": "chelsea", "coffee.jpg": "coffee", "rocket.jpg": "rocket", "astronaut.jpg": "astronaut"}


def main() -> None:
    from sklearn.datasets import load_digits
    import skimage.data

    digits = load_digits()
    counts = {label: 0 for label in range(10)}
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        if counts[label] == PER_CLASS:
            continue
        counts[label] += 1
        folder = HERE / "digits" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(pixels * 255 / 16).astype(np.uint8), "L").save(folder / f"{index:04d}.png")
    (HERE / "photos").mkdir(exist_ok=True)
    for filename, name in PHOTOS.items():
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(HERE / "photos" / filename, quality=90)


if __name__ == "__main__":
    main()
