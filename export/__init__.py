"""PyTorch -> ONNX model packages (``edgeai.export``; needs the ``export`` extra).

    from edgeai.export import export_model
    export_model("efficientnet-lite0", "effnet/")   # fp32 + optimized + int8, validated
    export_model("bert", "minilm/")                 # all-MiniLM-L6-v2 embeddings, fused, int8
    export_model("bert", "clf/", model="path/to/hf-checkpoint", task="text-classification")

Every export is compared with PyTorch on real inputs before it is written; the package is built
in a temporary sibling directory and renamed into place only when complete. Layout:
``exporter.py`` is the one export path; ``families/`` holds one module per family (its
``FAMILY`` and hooks); ``cnn.py``, ``transformer.py``, ``lstm.py`` and ``generic.py`` are the
model sources. Importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use: the family registry imports this package's families/ modules (small and
# torch-free) to read each FAMILY, and that must not pull in the export path as well.
_LAZY = {
    "export_model": ".api",
    "export_module": ".families.custom",
    "export_factory": ".families.custom",
    "load_weights": ".generic",
}
__all__ = ["export_model", "export_module", "export_factory", "load_weights"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
