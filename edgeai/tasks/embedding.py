"""``postprocess.type: embedding``: one ``{"embedding": vector}`` per item (pooled in the graph)."""

from __future__ import annotations

import numpy as np


class Embedding:
    def __init__(self, spec: dict, pkg):
        self.output = spec.get("output") or pkg.manifest["outputs"][0]["name"]

    def __call__(self, outputs: dict[str, np.ndarray], k: int | None = None) -> list[dict]:
        return [{"embedding": e} for e in outputs[self.output]]
