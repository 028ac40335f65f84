"""edgeai: PyTorch models exported to ONNX, optimized, quantized, and run offline.

    import edgeai
    clf = edgeai.load("efficientnet-lite0")      # or a package directory
    clf.predict("photo.jpg")["top_k"][0]         # {"index", "label", "score"}
    clf.provider, clf.variant                    # what runs

The runtime needs numpy, onnx, onnxruntime, pillow, tokenizers, typer and jinja2 (chat templates,
imported when a chat is rendered); it never imports torch.
Heavy modules load on first use, so ``import edgeai`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DependencyError, EdgeAIError, ExportError, InputError, PackageError, PipelineClosedError, ProviderError

__version__ = "0.1.0"

__all__ = [
    "DependencyError",
    "EdgeAIError",
    "ExportError",
    "InputError",
    "PackageError",
    "Pipeline",
    "PipelineClosedError",
    "ProviderError",
    "TruncationWarning",
    "__version__",
    "bench",
    "load",
]

if TYPE_CHECKING:
    from .benchmark import bench
    from .pipeline import Pipeline, load
    from .text import TruncationWarning


def __getattr__(name: str) -> Any:
    if name in ("load", "Pipeline"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "bench":
        from .benchmark import bench

        return bench
    if name == "TruncationWarning":  # what a text cut to the model's length warns with
        from .text import TruncationWarning

        return TruncationWarning
    raise AttributeError(f"module 'edgeai' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"load", "Pipeline", "bench", "TruncationWarning"})
