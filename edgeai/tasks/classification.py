"""``postprocess.type: classification``: softmax/sigmoid, then ``{"top_k": [{index, label, score}]}``."""

from __future__ import annotations

import numpy as np

from edgeai.postprocess import activate, top_k


class Classification:
    def __init__(self, spec: dict, pkg):
        self.output = spec.get("output") or pkg.manifest["outputs"][0]["name"]
        self.activation = spec.get("activation", "softmax")
        self.k = spec.get("top_k", 5)
        self.labels = pkg.labels

    def __call__(self, outputs: dict[str, np.ndarray], k: int | None = None) -> list[dict]:
        return top_k(activate(outputs[self.output], self.activation), k or self.k, self.labels)
