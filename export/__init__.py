"""PyTorch -> ONNX model packages (``edgeai.export``; needs the ``export`` extra).

    from edgeai.export import export_model
    export_model("efficientnet-lite0", "effnet/")   # fp32 + optimized + int8, validated

Every export is compared with PyTorch on real inputs before it is written; the package is built
in a temporary sibling directory and renamed into place only when complete.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Callable

import numpy as np

from edgeai import __version__
from edgeai.errors import ExportError, InputError
from edgeai.home import resolve_builtin
from edgeai.package import Package, file_entry, now, staging_dir, variant_entry, write_manifest

Progress = Callable[[str], None]
__all__ = ["export_model"]

OPSET = 17
# fp32 ONNX vs PyTorch on real photos: both are float32 with different kernels/op order.
FP32_TOLERANCE = 1e-3


def _say(progress: Progress | None, msg: str) -> None:
    if progress:
        progress(msg)


def export_model(
    name: str,
    out: str | os.PathLike | None = None,
    precision: str = "int8",
    progress: Progress | None = None,
) -> Package:
    """Export built-in model ``name`` into a package at ``out`` (default ``./NAME/``).

    ``precision="int8"`` runs the whole chain (export, validate, optimize, quantize, time);
    ``"fp32"`` stops after the validated fp32 export and the optimized variant.
    """
    b = resolve_builtin(name)
    if b is None:
        from edgeai.home import BUILTINS

        raise InputError(f"Unknown model {name!r}; built-in models: {', '.join(BUILTINS)}.")
    if precision not in ("fp32", "int8"):
        raise InputError(f"Unknown precision {precision!r}; choose fp32 or int8.")
    target = Path(out) if out is not None else Path(b.name)
    if b.family == "cnn":
        return _export_cnn(target, precision, progress)
    raise ExportError(f"No exporter for family {b.family!r} yet.")  # pragma: no cover


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


def _export_cnn(target: Path, precision: str, progress: Progress | None) -> Package:
    import torch

    from . import cnn
    from .onnx_export import to_onnx

    _say(progress, f"loading {cnn.NAME} (PyTorch, ImageNet weights)")
    module = cnn.build_module()
    crop = cnn.PREPROCESS["crop"]
    with staging_dir(target) as tmp:
        _say(progress, "exporting to ONNX (dynamic batch axis)")
        example = torch.zeros(2, 3, *crop)
        to_onnx(module, (example,), tmp / "model.onnx", ["pixel_values"], ["logits"],
                {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}, OPSET)
        (tmp / "labels.txt").write_text(cnn.labels_text(), encoding="utf-8")
        manifest = {
            "schema_version": 1,
            "name": cnn.NAME,
            "family": "cnn",
            "task": "image-classification",
            "description": "EfficientNet-Lite0, ImageNet-1k classifier (1000 classes), 224x224 RGB.",
            "inputs": [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, *crop]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 1000]}],
            "preprocess": cnn.PREPROCESS,
            "postprocess": {"type": "classification", "output": "logits", "labels": "labels.txt",
                            "activation": "softmax", "top_k": 5},
            "budget": {"metric": "top1_agreement", "min": 0.99,
                       "description": "top-1 agreement with fp32 on held-out photos (never used for calibration)"},
            "assets": {"labels.txt": file_entry(tmp / "labels.txt")},
            "variants": {},
            "provenance": {"source": cnn.SOURCE, "license": cnn.LICENSE, "created": now(), "edgeai": __version__,
                           "opset": OPSET, "exporter": "torch.onnx.export (TorchScript)", "versions": _versions()},
        }
        _say(progress, "validating ONNX fp32 against PyTorch on real photos")
        accuracy = _validate_cnn(module, tmp / "model.onnx", manifest)
        manifest["variants"]["fp32"] = variant_entry(tmp, "model.onnx", made_from=None, accuracy=accuracy,
                                                     recipe={"exporter": "torchscript", "opset": OPSET})
        write_manifest(tmp, manifest)
        del module
        _finish(Package.open(tmp), precision, progress)
    return Package.open(target)


def _finish(pkg: Package, precision: str, progress: Progress | None) -> None:
    from edgeai.quantize import optimize, quantize, record_latencies

    optimize(pkg, progress=progress)
    if precision == "int8":
        quantize(pkg, method="static", measure_latency=False, progress=progress)
    record_latencies(pkg, progress=progress)


def _validate_cnn(module, onnx_path: Path, manifest: dict) -> dict[str, float]:
    """ONNX fp32 vs PyTorch on every packaged photo (and crops), at batch sizes 1 and 7."""
    import torch

    from edgeai.preprocess import ImagePreprocessor
    from edgeai.quantize.photos import CALIBRATION, HELD_OUT, image_set
    from edgeai.session import Session

    pre = ImagePreprocessor(manifest["preprocess"])
    images = [im for _, im in image_set(CALIBRATION + HELD_OUT, per_photo=1, seed=7)]
    if not images:
        raise ExportError("No validation photos found: the export extra (scikit-image, scikit-learn) is not installed.")
    x = np.stack([pre(im) for im in images])
    session = Session(onnx_path, manifest["inputs"], manifest["outputs"], provider="cpu")
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()
    batches = [x[:1], x[1:8]] + [x[i : i + 16] for i in range(8, len(x), 16)]
    got = np.concatenate([session.run({"pixel_values": b})["logits"] for b in batches])
    diff = float(np.abs(ref - got).max())
    if diff > FP32_TOLERANCE:
        raise ExportError(f"The ONNX export differs from PyTorch by {diff:.2e} (tolerance {FP32_TOLERANCE:.0e}); not writing it.")
    return {"max_abs_diff": diff, "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()), "samples": float(len(x))}
