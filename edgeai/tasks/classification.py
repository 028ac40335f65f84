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
        spec_out = next((o for o in pkg.manifest["outputs"] if o["name"] == self.output), None)
        classes = (spec_out or {}).get("shape", [None])[-1] if (spec_out or {}).get("shape") else None
        named = len("\n".join(self.labels or []).rstrip().splitlines())  # trailing blank lines aside
        if self.labels is not None and isinstance(classes, int) and named != classes:
            # review: a labels file cut short (its hash updated) gave indices as labels for the rest, silently
            from edgeai.errors import PackageError

            raise PackageError(f"The package {pkg.path} has {named} labels for the {classes} classes of its output "
                               f"{self.output!r}; its labels file does not belong to this model: copy or export the package again.")

    def __call__(self, outputs: dict[str, np.ndarray], k: int | None = None) -> list[dict]:
        return top_k(activate(outputs[self.output], self.activation), k or self.k, self.labels)
