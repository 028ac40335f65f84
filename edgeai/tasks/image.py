"""``preprocess.type: image``: decode, resize, crop and normalize as the manifest says."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeai.preprocess import ImagePreprocessor


class ImageInput:
    kind = "image"

    def __init__(self, pkg, input_names: list[str]):
        self.image = ImagePreprocessor(pkg.manifest["preprocess"])
        self.input_name = input_names[0]

    def batch(self, items: list[Any]) -> dict[str, np.ndarray]:
        return {self.input_name: self.image.batch(items)}
