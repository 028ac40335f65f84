"""ONNX -> optimized / INT8 / fp16 variants of a model package (``edgeai.quantize``).

Uses ONNX Runtime's own tools: offline graph optimization (saved at the portable *extended*
level) and ``onnxruntime.quantization`` (static QDQ with calibration, or dynamic). Each new
variant is compared with fp32 on held-out inputs and timed on this CPU before it is recorded.

    from edgeai.quantize import optimize, quantize
    optimize("pkg/")                          # adds the "optimized" variant
    quantize("pkg/", method="static")         # adds the "int8" variant (tuned for ONNX Runtime's CPU kernels)
    quantize("pkg/", preset="tensorrt")       # the "int8" variant TensorRT accepts: static, symmetric QDQ
    quantize("pkg/", precision="fp16")        # adds the "fp16" variant (for GPUs; inputs/outputs stay fp32)

Layout: one recipe per file under ``steps/`` (a :class:`~edgeai.quantize.runner.Step`),
``runner.py`` for what every step shares, ``recipes.py`` (quantize, to_fp16) and
``optimizer.py`` (optimize) pick the step. This module stays light (no onnx, no onnxruntime):
the CLI reads the choices below at start-up, and the functions load on first use.
"""

from __future__ import annotations

import importlib

PRECISIONS = ("int8", "fp16", "int4")  # int4: weight-only, for text-generation packages
METHODS = ("auto", "static", "dynamic", "qat")  # qat: image models with a PyTorch reference
PRESETS = ("cpu", "tensorrt")
# ONNX Runtime's calibrators for static INT8. Not its Entropy one: quantize_static builds it with as
# many histogram bins as quantized bins (128, and no option reaches them), so it returns MinMax's
# ranges, byte for byte the same model at 7x the calibration time (measured, review).
CALIBRATIONS = ("minmax", "percentile")
FP16_SOURCES = ("fp32", "optimized")  # what an fp16 variant may be made from

# public name -> the module that defines it (relative to this package, or absolute)
_LAZY = {
    "optimize": ".optimizer",
    "quantize": ".recipes",
    "to_fp16": ".recipes",
    "wrap_onnx": ".wrap",
    "op_histogram": "edgeai.data.graphs",
    "record_latencies": ".runner",
}

__all__ = [
    "CALIBRATIONS",
    "FP16_SOURCES",
    "METHODS",
    "PRECISIONS",
    "PRESETS",
    "op_histogram",
    "optimize",
    "quantize",
    "record_latencies",
    "to_fp16",
    "wrap_onnx",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
