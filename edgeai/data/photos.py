"""Real photographs that installed packages ship, for validation and calibration.

scikit-image and scikit-learn carry a few dozen public-domain / CC0 photos in their wheels.
edgeai reads them by path (it never imports those packages). Their calibration split is what
static quantization calibrates on. Accuracy is measured on photos that calibration never sees
(DESIGN.md, Accuracy claims): the held-out photo set of :mod:`edgeai.data.photo_set` (355
distinct scenes from Debian packages, one view each) when it is installed, else the few
held-out wheel photos below with seeded crops of each (:func:`held_out_images` says which).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from edgeai.preprocess import open_image, to_rgb

from .photo_set import MIN_PHOTOS, SET_NAME, held_out_photos

# Photographs only (no synthetic test patterns). Licenses: see samples/LICENSES.md.
CALIBRATION = (
    "skimage:astronaut.png", "skimage:motorcycle_left.png", "skimage:hubble_deep_field.jpg",
    "skimage:retina.jpg", "skimage:ihc.png", "skimage:coins.png", "skimage:moon.png",
    "skimage:brick.png", "skimage:grass.png", "skimage:gravel.png", "skimage:cell.png",
    "skimage:clock_motion.png", "skimage:page.png", "skimage:text.png", "sklearn:china.jpg",
)
# Held out from calibration; accuracy is measured on them (with crops) without the photo set.
HELD_OUT = (
    "skimage:chelsea.png", "skimage:coffee.png", "skimage:rocket.jpg", "skimage:camera.png",
    "skimage:motorcycle_right.png", "sklearn:flower.jpg",
)


def _package_dir(module: str, *sub: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *sub)


def photo_path(key: str) -> Path | None:
    source, name = key.split(":")
    base = _package_dir("skimage", "data") if source == "skimage" else _package_dir("sklearn", "datasets", "images")
    path = base / name if base else None
    return path if path and path.is_file() else None


def photos(keys: tuple[str, ...]) -> list[Path]:
    return [p for k in keys if (p := photo_path(k)) is not None]


def views(path: Path, n: int, seed: int) -> Iterator[Image.Image]:
    """The photo itself, then ``n`` seeded random crops (50-100% of each side), half of them mirrored."""
    im = to_rgb(open_image(path))
    yield im
    rng = np.random.default_rng(seed)
    w, h = im.size
    for _ in range(n):
        fw, fh = rng.uniform(0.5, 1.0, size=2)
        cw, ch = max(8, int(w * fw)), max(8, int(h * fh))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((left, top, left + cw, top + ch))
        yield crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def image_set(keys: tuple[str, ...], per_photo: int, seed: int = 0) -> list[tuple[str, Image.Image]]:
    out = []
    for i, path in enumerate(photos(keys)):
        for j, im in enumerate(views(path, per_photo, seed + i)):
            out.append((f"{path.name}#{j}", im))
    return out


# What a variant's ``accuracy.held_out`` says when the wheel photos (and their crops) were used.
WHEEL_SET_NAME = "package-photos-crops"


def held_out_images(per_photo: int, seed: int = 1000) -> tuple[str, list]:
    """``(set name, images)`` accuracy is measured on: the installed photo set's paths (one view
    per photo, opened one at a time by the preprocessor) when at least ``MIN_PHOTOS`` are
    installed, else the held-out wheel photos with ``per_photo`` seeded crops each."""
    installed = held_out_photos()
    if len(installed) >= MIN_PHOTOS:
        return SET_NAME, installed
    return WHEEL_SET_NAME, [im for _, im in image_set(HELD_OUT, per_photo, seed=seed)]
