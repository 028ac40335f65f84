"""``postprocess.type: none``: the raw outputs of each item, ``{"outputs": {name: array}}``."""

from __future__ import annotations

import numpy as np


class Tensors:
    def __init__(self, spec: dict, pkg):
        pass

    def __call__(self, outputs: dict[str, np.ndarray], k: int | None = None) -> list[dict]:
        n = next(iter(outputs.values())).shape[0]
        return [{"outputs": {name: v[i] for name, v in outputs.items()}} for i in range(n)]
